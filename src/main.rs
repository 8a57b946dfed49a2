/// mimalloc keeps freed memory for reuse: with the system allocator, every large
/// tensor a training step frees went back to the kernel and came back as fresh, zeroed
/// pages, which cost more than the arithmetic of a small network.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    runner::cli::main()
}
