include!("link_args.rs");

fn main() {
    link_args("link_args.rs");
}
