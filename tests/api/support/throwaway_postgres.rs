//! A PostgreSQL server of the test process's own, for a machine where
//! PostgreSQL is installed but not running.
//!
//! When nothing answers at `TEST_DATABASE_URL`, the first test that needs
//! PostgreSQL makes a cluster (`initdb`) in a temporary folder and starts
//! `postgres` on it, on a free port of 127.0.0.1, without fsync; every test
//! of the process then shares it. It is stopped, and its folder removed,
//! when the process exits (an `atexit` hook: statics are never dropped).
//! Should the process die without running it, the server gets SIGQUIT as
//! its parent goes, and the next run removes the folder. When the tests run
//! as root (which PostgreSQL refuses), `initdb` and `postgres` run as the
//! `postgres` user.
//!
//! The binaries: those of the folder `TEST_POSTGRES_BINDIR` names, else the
//! `initdb` on `PATH` (and the `postgres` beside it), else those of the
//! highest version under `/usr/lib/postgresql/*/bin` (Debian, Ubuntu).

use std::ffi::CString;
use std::fs::File;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Names the folder of the binaries, overriding the search.
const BINDIR_VAR: &str = "TEST_POSTGRES_BINDIR";

/// Where Debian and Ubuntu install each version's binaries (`<version>/bin`).
const VERSIONED: &str = "/usr/lib/postgresql";

/// The temporary folders' names: this, then the process id.
const PREFIX: &str = "pushtoken-test-postgres-";

/// How long a connection to `TEST_DATABASE_URL` may take to open before
/// nothing is taken to answer there.
const PROBE: Duration = Duration::from_millis(500);

/// How long the throwaway server may take to start.
const START: Duration = Duration::from_secs(60);

/// How long it may take to stop at exit before it is killed.
const STOP: Duration = Duration::from_secs(10);

/// The throwaway server, once started: stopped at exit.
struct Running {
    postgres: Child,
    root: PathBuf,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// The admin URL of the PostgreSQL server tests use: `configured` when a
/// server answers there, else that of a throwaway server started now (once
/// per process; later calls get the same answer). The error is one line
/// saying why there is none, and what to do.
pub fn admin_url(configured: &str) -> Result<String, String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if answers(configured) {
            return Ok(configured.to_owned());
        }
        let url = start().map_err(|why| {
            format!(
                "PostgreSQL is not reachable at TEST_DATABASE_URL={configured}, and {why}: \
                 start a server or set TEST_DATABASE_URL"
            )
        })?;
        eprintln!("PostgreSQL is not reachable at {configured}; the tests use a throwaway server at {url}");
        Ok(url)
    })
    .clone()
}

/// Whether a connection to the host and port of `url` opens within
/// [`PROBE`]. A URL naming a Unix socket (or no host) is left to the
/// database connection to judge.
fn answers(url: &str) -> bool {
    let Some(address) = host_and_port(url) else {
        return true;
    };
    let Ok(addresses) = address.to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|address| TcpStream::connect_timeout(&address, PROBE).is_ok())
}

/// `host:port` of a `postgres://` URL (port 5432 when it names none);
/// `None` for a socket folder or no host.
fn host_and_port(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map(|(_, q)| q)),
        None => match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        },
    };
    if query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("host="))) {
        return None;
    }
    let host_port = authority.rsplit('@').next()?;
    if host_port.is_empty() || host_port.starts_with('%') {
        return None;
    }
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    })
}

/// Starts the throwaway server; its admin URL.
fn start() -> Result<String, String> {
    let bindir = bindir()?;
    let failed = |why: String| format!("a throwaway server could not be started ({why})");
    remove_leftovers();
    let owner = owner().map_err(failed)?;
    let root = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).map_err(|e| failed(format!("{}: {e}", root.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&root, Some(uid), Some(gid))
            .map_err(|e| failed(format!("chown {}: {e}", root.display())))?;
    }
    let data = root.join("data");
    let initdb = run_as(&bindir.join("initdb"), owner, &root)
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("initdb: {e}")))?;
    if !initdb.status.success() {
        let _ = std::fs::remove_dir_all(&root);
        return Err(failed(format!(
            "initdb: {}",
            last_line(&String::from_utf8_lossy(&initdb.stderr))
        )));
    }
    // A port found free may be taken before the server binds it: try again.
    let mut why = String::new();
    for _ in 0..3 {
        match launch(&bindir, owner, &root, &data) {
            Ok((postgres, port)) => {
                *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Running { postgres, root });
                // SAFETY: `stop_at_exit` is an `extern "C" fn()` that
                // neither unwinds nor returns early.
                unsafe { libc::atexit(stop_at_exit) };
                return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
            }
            Err(e) => why = e,
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Err(failed(why))
}

/// Starts `postgres` on `data`, on a free port, and waits until it takes
/// connections; the process and its port.
fn launch(
    bindir: &Path,
    owner: Option<(u32, u32)>,
    root: &Path,
    data: &Path,
) -> Result<(Child, u16), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let log_path = root.join("postgres.log");
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_too = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = run_as(&bindir.join("postgres"), owner, root);
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(root)
        .args(["-c", "listen_addresses=127.0.0.1", "-F"])
        .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_too);
    // SAFETY: `prctl` is async-signal-safe; it runs in the child between
    // fork and exec, after the change of user, which would clear it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut postgres = spawn_for_good(cmd).map_err(|e| format!("postgres: {e}"))?;
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = postgres.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("postgres exited ({status}): {}", last_line(&log)));
        }
        if ready(data, port) {
            return Ok((postgres, port));
        }
        if started.elapsed() > START {
            let _ = postgres.kill();
            let _ = postgres.wait();
            return Err(format!(
                "postgres was not ready within {}s",
                START.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server on `data` takes connections: its `postmaster.pid`
/// says `ready` (PostgreSQL 10 and later), or, for an older server that
/// does not say, `port` accepts a connection.
fn ready(data: &Path, port: u16) -> bool {
    let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = pid_file.lines().collect();
    match lines.get(7) {
        Some(status) => status.trim() == "ready",
        None => lines.len() >= 4 && TcpStream::connect(("127.0.0.1", port)).is_ok(),
    }
}

/// Spawns `cmd` from a thread that lives as long as the process: the
/// parent-death signal is sent when the thread that spawned a child ends,
/// and a test's thread ends with its test.
fn spawn_for_good(mut cmd: Command) -> std::io::Result<Child> {
    let (sent, spawned) = mpsc::channel();
    std::thread::Builder::new()
        .name("throwaway-postgres".into())
        .spawn(move || {
            let _ = sent.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })?;
    spawned
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread ended")))
}

/// Runs at exit: stops the server (an immediate shutdown: nothing in it
/// needs saving) and removes its folder.
extern "C" fn stop_at_exit() {
    let running = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(Running { mut postgres, root }) = running else {
        return;
    };
    if let Ok(pid) = i32::try_from(postgres.id()) {
        // SAFETY: a signal to the server this process started and has not
        // reaped.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
    }
    let asked = Instant::now();
    while matches!(postgres.try_wait(), Ok(None)) {
        if asked.elapsed() > STOP {
            let _ = postgres.kill();
            let _ = postgres.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A command running `program` in `dir`, as the user and group `owner`
/// when given.
fn run_as(program: &Path, owner: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGOPTIONS"] {
        cmd.env_remove(var);
    }
    if let Some((uid, gid)) = owner {
        // std drops the supplementary groups too when root changes user.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Who runs the server: `None`, this process's user; when that is root,
/// which PostgreSQL refuses, the `postgres` user's uid and gid.
fn owner() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: the entry is read at once, before another getpw* call.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(
            "the tests run as root, which PostgreSQL refuses, and there is no postgres user \
             to run it as"
                .to_owned(),
        );
    }
    // SAFETY: not null, as just checked.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Whether `dir` holds `initdb` and `postgres`.
fn complete(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// The folder holding `initdb` and `postgres` (see the module's comment),
/// or why there is none.
fn bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BINDIR_VAR) {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        return Err(format!(
            "{BINDIR_VAR}={} holds no initdb and postgres",
            dir.display()
        ));
    }
    searched().ok_or_else(|| {
        format!("no initdb and postgres were found (on PATH or under {VERSIONED}/*/bin)")
    })
}

/// The folder of the `initdb` on `PATH` (when `postgres` is beside it),
/// else that of the highest version under [`VERSIONED`].
fn searched() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).find_map(|dir| {
        // Where a link on PATH (/usr/local/bin/initdb) leads.
        let initdb = dir.join("initdb").canonicalize().ok()?;
        let dir = initdb.parent()?.to_path_buf();
        complete(&dir).then_some(dir)
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(VERSIONED)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let dir = entry.path().join("bin");
            complete(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// Removes the folders of throwaway servers whose test process is gone
/// (one killed before it could remove its own), unless their server still
/// runs.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let alive = |pid: i32| {
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only asks whether the process exists.
        let answered = unsafe { libc::kill(pid, 0) } == 0;
        answered || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let postmaster = std::fs::read_to_string(entry.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        if postmaster.is_some_and(alive) {
            continue;
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// The last line of `text` that is not blank.
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no output")
}

#[test]
fn host_and_port_come_from_the_url_with_5432_by_default() {
    for (url, expected) in [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            Some("127.0.0.1:5432"),
        ),
        ("postgres://u:p@db/x?sslmode=disable", Some("db:5432")),
        ("postgresql://localhost", Some("localhost:5432")),
        ("postgres://u@[::1]:5999/db", Some("[::1]:5999")),
        ("postgres://u@[::1]/db", Some("[::1]:5432")),
        ("postgres:///db?host=/var/run/postgresql", None),
        ("postgres://u@/db", None),
    ] {
        assert_eq!(host_and_port(url).as_deref(), expected, "{url}");
    }
}
