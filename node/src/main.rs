//! `meshlite`: the Meshlite node command-line tool and daemon. See `meshlite --help`.

fn main() -> std::process::ExitCode {
    meshlite_node::cli::main()
}
