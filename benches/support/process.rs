//! Readings of a running process from `/proc`, and the free port a benchmark starts the
//! binary on.

/// A field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The process's user + system CPU time, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The process's user + system CPU time, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    cpu_ticks(pid) as f64 / per_second as f64
}

/// The CPU time the process's live threads have run, in nanoseconds (the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`): finer than [`cpu_ticks`], for costs of microseconds
/// per call. A thread that has exited no longer counts, so read it across a span in which the
/// process keeps its threads (a tokio runtime's workers do).
pub fn cpu_nanos(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path().join("schedstat");
            let text = std::fs::read_to_string(path).ok()?;
            text.split(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Raises this process's open-file limit to its hard limit, for benchmarks that hold many
/// connections (the binaries they start inherit it).
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The first process whose command line holds every one of `words` as an argument.
pub fn find_process(words: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        words
            .iter()
            .all(|word| args.contains(&word.as_bytes()))
            .then_some(pid)
    })
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The scheduler binary as a child process on a free loopback port; killed when dropped.
pub struct Binary {
    child: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl Binary {
    /// The binary with `RUST_LOG=warn`, its standard output discarded and no broker or
    /// collector from the caller's environment: add the flags and variables, then [`start`].
    ///
    /// [`start`]: Binary::start
    pub fn command() -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_scheduler"));
        command
            .env("RUST_LOG", "warn")
            .env_remove("KAFKA_BROKERS")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(std::process::Stdio::null());
        command
    }

    /// Starts `command` on a free port and waits until it answers `/healthz`.
    pub async fn start(mut command: std::process::Command) -> Binary {
        let port = free_port();
        command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        let child = command.spawn().expect("the scheduler binary starts");
        let binary = Binary {
            pid: child.id(),
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            let answer = http.get(format!("{}/healthz", binary.base())).send();
            if answer.await.is_ok_and(|r| r.status() == 200) {
                return binary;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the scheduler binary did not answer within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
