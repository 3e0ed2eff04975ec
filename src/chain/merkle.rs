//! Merkle roots: from a full list of txids (what a node does) and from a
//! coinbase hash plus a branch (what a Stratum miner does).

use super::hash::{sha256d, TxMerkleNode, Txid};

fn hash_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(left);
    buf[32..].copy_from_slice(right);
    sha256d(&buf)
}

/// The root for a coinbase hash and the branch of its siblings, leaf first.
/// The coinbase is always the leftmost leaf, so each step hashes
/// `current ‖ sibling`. Branch entries are in internal byte order, as Stratum's
/// `mining.notify` sends them.
pub fn root_from_branch(coinbase_txid: &Txid, branch: &[[u8; 32]]) -> TxMerkleNode {
    let mut cur = coinbase_txid.to_byte_array();
    for sibling in branch {
        cur = hash_pair(&cur, sibling);
    }
    TxMerkleNode::from_byte_array(cur)
}

/// The root of a block's transactions (Bitcoin's `BlockMerkleRoot`, an odd
/// level duplicates its last node). `None` for an empty list.
pub fn root(txids: &[Txid]) -> Option<TxMerkleNode> {
    if txids.is_empty() {
        return None;
    }
    let mut level: Vec<[u8; 32]> = txids.iter().map(|t| t.to_byte_array()).collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| hash_pair(&p[0], p.get(1).unwrap_or(&p[0]))).collect();
    }
    Some(TxMerkleNode::from_byte_array(level[0]))
}

/// The branch that proves the first leaf (the coinbase): its sibling at each
/// level. `txids[0]` is the coinbase's slot; its value does not matter.
pub fn branch_for_coinbase(txids: &[Txid]) -> Vec<[u8; 32]> {
    let mut branch = Vec::new();
    if txids.len() <= 1 {
        return branch;
    }
    let mut level: Vec<[u8; 32]> = txids.iter().map(|t| t.to_byte_array()).collect();
    while level.len() > 1 {
        branch.push(*level.get(1).unwrap_or(&level[0]));
        level = level.chunks(2).map(|p| hash_pair(&p[0], p.get(1).unwrap_or(&p[0]))).collect();
    }
    branch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(s: &str) -> Txid {
        s.parse().unwrap()
    }

    // Block 100000: four transactions, merkle root in its header.
    const B100K: [&str; 4] = [
        "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
        "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
        "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
        "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
    ];
    const B100K_ROOT: &str = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766";

    #[test]
    fn block_100000_root() {
        let ids: Vec<Txid> = B100K.iter().map(|s| txid(s)).collect();
        assert_eq!(root(&ids).unwrap().to_string(), B100K_ROOT);
        let branch = branch_for_coinbase(&ids);
        assert_eq!(branch.len(), 2);
        assert_eq!(root_from_branch(&ids[0], &branch).to_string(), B100K_ROOT);
    }

    #[test]
    fn single_and_odd_counts() {
        let a = txid("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
        assert_eq!(root(&[a]).unwrap().to_byte_array(), a.to_byte_array());
        assert!(root(&[]).is_none());
        // Branch and full-tree roots agree for every count 1..=17, odd levels included.
        for n in 1..=17u8 {
            let ids: Vec<Txid> = (0..n).map(|i| Txid::hash(&[i])).collect();
            let branch = branch_for_coinbase(&ids);
            assert_eq!(root_from_branch(&ids[0], &branch), root(&ids).unwrap(), "n={n}");
        }
    }
}
