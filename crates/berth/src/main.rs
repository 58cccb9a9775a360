use clap::Parser;

fn main() -> std::process::ExitCode {
    bound_malloc_arenas();
    let cli = berth::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    match runtime.block_on(berth::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One glibc malloc arena per core instead of glibc's eight per core.
///
/// glibc gives a thread that finds the arenas busy an arena of its own, up to eight per
/// core, and keeps what each arena freed for its later use. Berth has many short-lived
/// allocating threads beyond the runtime's one per core (SQLite's connection threads,
/// the blocking pool's file I/O): after a large admin page over 20,000 repositories the
/// server stayed at 70 MiB resident, in ten arenas, and a 1 GiB push then peaked at 81
/// MiB; with one arena per core, 45 and 64 MiB, at the same CPU per operation
/// (`bench/run.sh --workloads ui-registry,push-mono --catalog-repos 20000`).
/// `MALLOC_ARENA_MAX` in the environment still wins. The
/// thresholds that decide between the heap and mmap are left dynamic: fixing them made
/// every 1 MiB pull buffer an mmap and doubled the CPU per pulled GB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn bound_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a malloc parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}
