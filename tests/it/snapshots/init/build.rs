fn main() {
    include!("portguard_build.rs");
}
