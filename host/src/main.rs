fn main() {
    std::process::exit(diffgraph::cli::main())
}
