//! The `allot` binary: parse the command line and hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

// jemalloc for everything the process allocates, SQLite's C code included
// (the allocator's `malloc` replaces glibc's). glibc keeps, per arena, the
// high-water mark of what its threads once held, and SQLite runs one thread
// per connection: under steady load the resident set climbed. jemalloc with
// an arena per CPU and dirty pages returned after a second (its settings
// are built in, see `.cargo/config.toml`) keeps it bounded, and allot itself
// stays in safe Rust.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(allot::cli::main()),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
