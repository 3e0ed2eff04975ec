fn main() -> std::process::ExitCode {
    hashrig::cli::main()
}
