fn main() -> std::process::ExitCode {
    pushtoken::cli::run()
}
