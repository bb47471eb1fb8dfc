//! The command line: `serve` (default), `migrate`, `user add|list|passwd|revoke|delete`,
//! `notify`, `export`, `import`, `stats`, `openapi`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{load_secret_files, Cli, Command, Config, LogFormat, UserCommand};
use crate::model::{check_password, check_username};
use crate::secrets::hash_blocking;
use crate::store::{missing_sqlite_file, NewUser, Stats, Store};
use crate::{open_store, serve, shutdown_signal, unix_now};

/// Runs the command line and returns the process exit code.
pub fn run() -> ExitCode {
    return_large_blocks_to_the_system();
    if let Err(reason) = load_secret_files() {
        eprintln!("pushtoken: {reason}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let config = match Config::from_settings(&cli.settings) {
        Ok(config) => config,
        Err(reason) => {
            eprintln!("pushtoken: {reason}");
            return ExitCode::from(2);
        }
    };
    // An export reads each table in one statement and an import stores a
    // thousand records in one: sqlx's warnings of statements slower than a
    // second would be noise there.
    let whole_tables = matches!(cli.command, Some(Command::Export | Command::Import));
    init_logging(config.log_format, whole_tables);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pushtoken: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the causes' texts hold.
            eprintln!("pushtoken: {}", format!("{e:#}").replace(['\r', '\n'], " "));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, quiet_slow_statements: bool) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if quiet_slow_statements {
        if let Ok(directive) = "sqlx::query=error".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Openapi => {
            print!("{}", crate::http::openapi().to_yaml()?);
            Ok(())
        }
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            serve(config, listener, shutdown_signal()).await
        }
        Command::Migrate => {
            let store = open_store(&config).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::User(UserCommand::Add {
            username,
            password,
            password_stdin: _,
        }) => {
            let password = password.map_or_else(read_password_line, Ok)?;
            check_username(&username)
                .and_then(|()| check_password(&password))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = open_store(&config).await?;
            let password_hash = hash_password(&config, password).await?;
            let user = NewUser {
                username,
                password_hash,
                email: None,
                phone: None,
                realm: None,
            };
            let created = store.create_user(user, unix_now()).await;
            store.close().await;
            println!("{}", created.map_err(|e| anyhow::anyhow!("{e}"))?);
            Ok(())
        }
        Command::User(UserCommand::Passwd {
            username,
            password,
            password_stdin: _,
        }) => {
            let password = password.map_or_else(read_password_line, Ok)?;
            check_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
            let password_hash = hash_password(&config, password).await?;
            let username = &username;
            with_user(&config, username, |store, id| async move {
                let revoked = store.change_password(id, &password_hash, None).await?;
                println!("password of {username} (id {id}) changed; {revoked} sessions revoked");
                Ok(())
            })
            .await
        }
        Command::User(UserCommand::Revoke { username }) => {
            let username = &username;
            with_user(&config, username, |store, id| async move {
                let revoked = store.revoke_sessions(id).await?;
                println!("{revoked} sessions of {username} (id {id}) revoked");
                Ok(())
            })
            .await
        }
        Command::User(UserCommand::Delete { username }) => {
            let username = &username;
            with_user(&config, username, |store, id| async move {
                let Some(gone) = store.delete_user(id).await? else {
                    anyhow::bail!("no user {username}");
                };
                println!(
                    "user {username} (id {id}) deleted with {} sessions, {} push tokens and {} events",
                    gone.sessions, gone.push_tokens, gone.events
                );
                Ok(())
            })
            .await
        }
        Command::Notify(notification) => {
            let (status, answer) = crate::notify_client::send(&config, &notification).await?;
            println!("{answer}");
            anyhow::ensure!(status.is_success(), "the server answered {status}");
            Ok(())
        }
        Command::Export => {
            let store = open_existing_store(&config).await?;
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
            let exported = store.export(&mut out).await;
            store.close().await;
            let records = exported?;
            tracing::info!(records, "exported");
            Ok(())
        }
        Command::Import => {
            let store = open_store(&config).await?;
            let mut input = tokio::io::BufReader::with_capacity(1 << 16, tokio::io::stdin());
            let imported = store.import(&mut input).await;
            store.close().await;
            let imported = imported.context("import refused, nothing written")?;
            println!("imported {} records: {imported}", imported.total());
            Ok(())
        }
        Command::Stats { json } => {
            let store = open_existing_store(&config).await?;
            let stats = store.stats(unix_now()).await;
            store.close().await;
            let stats = stats?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                print!("{}", stats_table(&stats));
            }
            Ok(())
        }
        Command::User(UserCommand::List) => {
            let store = open_store(&config).await?;
            let users = store.list_users().await;
            store.close().await;
            println!(
                "{:>8}  {:<32}  {:<40}  {:<20}  created_at",
                "id", "username", "email", "phone"
            );
            for u in users? {
                println!(
                    "{:>8}  {:<32}  {:<40}  {:<20}  {}",
                    u.id,
                    u.username,
                    u.email.unwrap_or_default(),
                    u.phone.unwrap_or_default(),
                    u.created_at
                );
            }
            Ok(())
        }
    }
}

/// Opens the configured database to read it: a SQLite file that is not
/// there is an error, not a new empty database.
async fn open_existing_store(config: &Config) -> anyhow::Result<Store> {
    if let Some(path) = missing_sqlite_file(&config.database_url) {
        anyhow::bail!("no database at {} (see DATABASE_URL)", path.display());
    }
    open_store(config).await
}

/// `pushtoken stats` for people: the counts, then the push tokens of each
/// family by platform.
fn stats_table(stats: &Stats) -> String {
    use std::fmt::Write;
    let mut table = String::new();
    for (what, count) in [
        ("users", stats.users),
        ("live sessions", stats.sessions),
        ("socket clients", stats.socket_clients),
        ("events", stats.events),
    ] {
        let _ = writeln!(table, "{what:<16}{count:>12}");
    }
    let (ring, message) = (&stats.tokens.ring, &stats.tokens.message);
    let _ = writeln!(
        table,
        "\n{:<16}{:>12}{:>12}",
        "push tokens", "ring", "message"
    );
    let _ = writeln!(
        table,
        "{:<16}{:>12}{:>12}",
        "  all", ring.total, message.total
    );
    let platforms: std::collections::BTreeSet<&String> = ring
        .platforms
        .keys()
        .chain(message.platforms.keys())
        .collect();
    for platform in platforms {
        let count = |family: &crate::store::FamilyStats| {
            family.platforms.get(platform).copied().unwrap_or(0)
        };
        let name = if platform.is_empty() {
            "(none)"
        } else {
            platform.as_str()
        };
        let _ = writeln!(
            table,
            "  {name:<14}{:>12}{:>12}",
            count(ring),
            count(message)
        );
    }
    table
}

/// A new hash of `password`, at the configured cost.
async fn hash_password(config: &Config, password: String) -> anyhow::Result<String> {
    let cost = config.password_cost.clone();
    tokio::task::spawn_blocking(move || hash_blocking(&cost, &password)).await?
}

/// Runs `job` on the user named `login` (username, email or phone) of the
/// configured database: a one-line error when there is none.
async fn with_user<F, Fut>(config: &Config, login: &str, job: F) -> anyhow::Result<()>
where
    F: FnOnce(Store, i64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let store = open_store(config).await?;
    let done = match store.find_credentials(login).await {
        Ok(Some(user)) => job(store.clone(), user.id).await,
        Ok(None) => Err(anyhow::anyhow!("no user {login}")),
        Err(e) => Err(e.into()),
    };
    store.close().await;
    done
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

/// Argon2 hashes a password in a 19 MiB block. glibc raises its mmap
/// threshold once such a block is freed, after which the blocks come from
/// per-thread arenas and stay with the process: a few hundred logins would
/// pin hundreds of MiB. A fixed threshold keeps large blocks mmapped, so they
/// go back to the system when freed.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called once, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
