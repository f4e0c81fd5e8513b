// r8s-server embeds the agent: the same link arguments.
include!("../agent/link_args.rs");

fn main() {
    link_args("../agent/link_args.rs");
}
