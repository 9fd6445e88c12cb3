//! `kairan-admin`: the administrators' command line over the admin HTTP API.

fn main() -> std::process::ExitCode {
    kairan_admin::main()
}
