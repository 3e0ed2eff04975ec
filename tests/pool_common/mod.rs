//! A test pool that speaks Stratum V1 as real pools do, over any byte
//! stream: BIP310 configure, subscribe with session resume, difficulty,
//! clean jobs, extranonce changes. It checks every share itself with the
//! `sha2` crate (not hashrig's hashing or header code) against the
//! difficulty its job was issued under, and refuses duplicates. Jobs are the
//! real mining.notify in tests/data/stratum_notify.jsonl.
#![allow(dead_code)] // not every test that includes this module needs all of it

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const MASK: u32 = 0x1fff_e000;
pub const D1: f64 = 1.0 / 4096.0;

pub fn sha256d(b: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(b)).into()
}

#[derive(Clone)]
pub struct Job {
    pub params: Vec<Value>,
    pub diff: f64,
    pub en1: Vec<u8>,
    pub sent: Instant,
}

#[derive(Default)]
pub struct Tally {
    /// Every share accepted, whatever its job.
    pub accepted: usize,
    /// Accepted shares of the job prefix being served.
    pub current: usize,
    /// Accepted shares of older jobs the pool still takes.
    pub older: usize,
    pub rejected: Vec<String>,
    pub versions_rolled: usize,
    pub seen: HashSet<(String, String, String, String, String)>,
}

pub struct Conn {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
    pub en1: Vec<u8>,
    pub jobs: HashMap<String, Job>,
    pub diff: f64,
    pub session: String,
    /// Version rolling was negotiated (mining.configure answered): shares
    /// may carry version bits only then.
    pub rolling: bool,
}

pub fn notify_template() -> Vec<Value> {
    let line = include_str!("../data/stratum_notify.jsonl").lines().next().unwrap();
    let v: Value = serde_json::from_str(line).unwrap();
    v["params"].as_array().unwrap().clone()
}

impl Conn {
    pub fn send(&mut self, v: Value) {
        let mut s = v.to_string();
        s.push('\n');
        self.w.write_all(s.as_bytes()).unwrap();
    }
    pub fn raw(&mut self, s: &str) {
        self.w.write_all(s.as_bytes()).unwrap();
    }
    /// Next message, or None on EOF / timeout.
    pub fn recv(&mut self, until: Instant) -> Option<Value> {
        loop {
            if Instant::now() > until {
                return None;
            }
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => return Some(serde_json::from_str(&line).expect("the miner sends JSON")),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(_) => return None,
            }
        }
    }
    pub fn set_difficulty(&mut self, d: f64) {
        self.diff = d;
        self.send(json!({"id": null, "method": "mining.set_difficulty", "params": [d]}));
    }
    pub fn notify(&mut self, id: &str, clean: bool) {
        self.notify_with(id, clean, |_| {});
    }
    /// [`notify`](Self::notify) with the job's params changed by `edit`.
    pub fn notify_with(&mut self, id: &str, clean: bool, edit: impl FnOnce(&mut Vec<Value>)) {
        let mut p = notify_template();
        edit(&mut p);
        p[0] = json!(id);
        p[8] = json!(clean);
        self.jobs
            .insert(id.into(), Job { params: p.clone(), diff: self.diff, en1: self.en1.clone(), sent: Instant::now() });
        self.send(json!({"id": null, "method": "mining.notify", "params": p}));
    }
    /// Handles what the miner sends until `want` more shares are accepted.
    pub fn serve(&mut self, t: &mut Tally, want: usize, job_prefix: &str) {
        let goal = t.current + want;
        let until = Instant::now() + Duration::from_secs(90);
        while t.current < goal {
            let m = self.recv(until).unwrap_or_else(|| {
                panic!(
                    "pool: no more shares of {job_prefix}* (have {}, want {goal}; {} of older jobs)",
                    t.current, t.older
                )
            });
            self.handle(m, t, job_prefix);
        }
    }
    pub fn handle(&mut self, m: Value, t: &mut Tally, job_prefix: &str) {
        let id = m["id"].clone();
        match m["method"].as_str().unwrap_or("") {
            "mining.submit" => {
                let p = m["params"].as_array().unwrap().clone();
                let verdict = self.check(&p, t);
                match verdict {
                    Ok(()) => {
                        let job = p[1].as_str().unwrap();
                        t.accepted += 1;
                        // Only shares of the job being served count toward
                        // `serve`'s goal: a miner that missed the job switch
                        // keeps sending shares of an older (still valid) job
                        // and never reaches it.
                        if job.starts_with(job_prefix) {
                            t.current += 1;
                        } else {
                            t.older += 1;
                        }
                        self.send(json!({"id": id, "result": true, "error": null}));
                    }
                    Err(e) => {
                        t.rejected.push(e.clone());
                        self.send(json!({"id": id, "result": null, "error": [23, e, null]}));
                    }
                }
            }
            "mining.extranonce.subscribe" => self.send(json!({"id": id, "result": true, "error": null})),
            "" => {} // an answer to our requests (client.get_version)
            other => panic!("pool: unexpected {other} mid-session"),
        }
    }
    /// The pool's own share check: sha2 directly, header built here.
    pub fn check(&self, p: &[Value], t: &mut Tally) -> Result<(), String> {
        let s = |i: usize| p.get(i).and_then(Value::as_str).ok_or(format!("param {i}")).map(str::to_owned);
        let (job_id, en2, ntime, nonce) = (s(1)?, s(2)?, s(3)?, s(4)?);
        let vbits = s(5).ok();
        let key = (job_id.clone(), en2.clone(), ntime.clone(), nonce.clone(), vbits.clone().unwrap_or_default());
        if !t.seen.insert(key) {
            return Err("Duplicate share".into());
        }
        let job = self.jobs.get(&job_id).ok_or("Job not found")?;
        let en2b = hex::decode(&en2).map_err(|_| "bad en2")?;
        if en2b.len() != 4 {
            return Err("extranonce2 of the wrong size".into());
        }
        let jp = &job.params;
        let mut cb = hex::decode(jp[2].as_str().unwrap()).unwrap();
        cb.extend_from_slice(&job.en1);
        cb.extend_from_slice(&en2b);
        cb.extend_from_slice(&hex::decode(jp[3].as_str().unwrap()).unwrap());
        let mut root = sha256d(&cb);
        for b in jp[4].as_array().unwrap() {
            let mut buf = root.to_vec();
            buf.extend_from_slice(&hex::decode(b.as_str().unwrap()).unwrap());
            root = sha256d(&buf);
        }
        let job_version = u32::from_str_radix(jp[5].as_str().unwrap(), 16).unwrap();
        let mut version = job_version;
        if let Some(v) = &vbits {
            if !self.rolling {
                return Err("version bits without version rolling".into());
            }
            let v = u32::from_str_radix(v, 16).map_err(|_| "bad version bits")?;
            if v & !MASK != 0 {
                return Err("version bits outside the mask".into());
            }
            version = (job_version & !MASK) | v;
            if version != job_version {
                t.versions_rolled += 1;
            }
        }
        let job_ntime = u32::from_str_radix(jp[7].as_str().unwrap(), 16).unwrap();
        let nt = u32::from_str_radix(&ntime, 16).map_err(|_| "bad ntime")?;
        if nt < job_ntime || (nt - job_ntime) as u64 > job.sent.elapsed().as_secs() + 1 {
            return Err(format!("ntime {nt} rolled faster than real time"));
        }
        let mut header = Vec::with_capacity(80);
        header.extend_from_slice(&version.to_le_bytes());
        // Stratum's prevhash: 4-byte words, each byte-swapped.
        for w in hex::decode(jp[1].as_str().unwrap()).unwrap().chunks(4) {
            header.extend(w.iter().rev());
        }
        header.extend_from_slice(&root);
        header.extend_from_slice(&nt.to_le_bytes());
        header.extend_from_slice(&u32::from_str_radix(jp[6].as_str().unwrap(), 16).unwrap().to_le_bytes());
        header.extend_from_slice(&u32::from_str_radix(&nonce, 16).map_err(|_| "bad nonce")?.to_le_bytes());
        let hash = sha256d(&header);
        // hash as a number (little-endian) against diff1 / difficulty.
        let value = hash.iter().rev().fold(0f64, |acc, b| acc * 256.0 + *b as f64);
        let target = 65535.0 * 2f64.powi(208) / job.diff;
        if value > target {
            return Err("Low difficulty share".into());
        }
        Ok(())
    }
}

/// Accepts a miner connection and does the handshake; skips connections
/// that close at once (the miner's probes of a returning primary).
pub fn accept(l: &TcpListener, en1: &[u8], session: &str, expect_resume: bool) -> Conn {
    accept_with(l, en1, session, expect_resume, true)
}

/// [`accept`], optionally as a pool that never answers mining.configure
/// (as some do): no version rolling on that connection.
pub fn accept_with(l: &TcpListener, en1: &[u8], session: &str, expect_resume: bool, answer_configure: bool) -> Conn {
    accept_then(l, en1, session, expect_resume, answer_configure, |_| {})
}

/// [`accept_with`], calling `before_authorized` just before the answer to
/// mining.authorize (pools often send their first job then).
pub fn accept_then(
    l: &TcpListener,
    en1: &[u8],
    session: &str,
    expect_resume: bool,
    answer_configure: bool,
    mut before_authorized: impl FnMut(&mut Conn),
) -> Conn {
    loop {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut c = Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            en1: en1.to_vec(),
            jobs: HashMap::new(),
            diff: D1,
            session: session.into(),
            rolling: false,
        };
        let until = Instant::now() + Duration::from_secs(30);
        let mut authorized = false;
        let mut probe = false;
        while !authorized {
            let Some(m) = c.recv(until) else {
                probe = true;
                break;
            };
            let id = m["id"].clone();
            match m["method"].as_str().unwrap() {
                "mining.configure" => {
                    assert_eq!(m["params"][0], json!(["version-rolling"]));
                    if answer_configure {
                        c.rolling = true;
                        c.send(json!({"id": id, "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null}));
                    }
                }
                "mining.subscribe" => {
                    let resumed = m["params"].get(1).and_then(Value::as_str) == Some(c.session.as_str());
                    assert_eq!(resumed, expect_resume, "session resume: {m}");
                    let sid = c.session.clone();
                    let en1 = hex::encode(&c.en1);
                    c.send(json!({"id": id, "result": [[["mining.set_difficulty", "d"], ["mining.notify", sid]], en1, 4], "error": null}));
                }
                "mining.authorize" => {
                    assert_eq!(m["params"], json!(["worker1", "secret"]));
                    before_authorized(&mut c);
                    c.send(json!({"id": id, "result": true, "error": null}));
                    authorized = true;
                }
                "mining.extranonce.subscribe" => c.send(json!({"id": id, "result": true, "error": null})),
                other => panic!("pool: unexpected {other} in the handshake"),
            }
        }
        if !probe {
            return c;
        }
    }
}
