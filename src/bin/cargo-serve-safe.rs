//! `cargo serve-safe`: see the portguard README.

fn main() {
    std::process::exit(portguard::app::serve_safe_main(
        std::env::args_os().collect(),
    ));
}
