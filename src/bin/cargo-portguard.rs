//! `cargo portguard`: see the portguard README.

fn main() {
    std::process::exit(portguard::app::portguard_main(
        std::env::args_os().collect(),
    ));
}
