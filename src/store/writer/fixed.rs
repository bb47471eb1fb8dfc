//! Writes of fixed statements, and the one place that runs several
//! statements in one sqlx query.
//!
//! A kind of fixed write ([`Statements`]) is the same SQL every time with
//! the write's own arguments. Its placeholder and statement counts are read
//! from its SQL, never written by hand, and every write is checked to bind
//! exactly that many arguments before it runs: sqlx's SQLite driver reads a
//! placeholder it has no argument for as `NULL`, so a miscount would
//! otherwise shift one write's arguments into the next one's statements.
//!
//! [`Grouping::Commands`] runs up to [`MAX_CHUNK`] writes of one kind as one
//! command of many statements, the `k`-th write's `$n` renumbered to
//! `$(k * params + n)`: sqlx's connection thread runs the statements back to
//! back instead of a round trip to that thread for each. sqlx 0.8 documents
//! several statements in one query as SQLite-only and deprecated; should it
//! go, [`Grouping::OneByOne`] is the fallback: each statement its own query,
//! with the same outcomes (the unit tests run both), a round trip to the
//! connection's thread each: PUT's p99 at 11,800/s was 25–34 ms that way,
//! 3.5–6.2 ms with commands (BENCHMARKS.md).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use futures_util::StreamExt;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Either, Executor, SqliteConnection};

/// Most writes of one kind in one command. Commands hold a power of two of
/// them, so a kind has at most five texts (1 to 16 writes) to prepare and
/// keep in the connection's statement cache (32 cost 2 MiB more for no
/// measurable gain).
pub(super) const MAX_CHUNK: usize = 16;

/// How the writer hands a batch's fixed writes to SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Grouping {
    /// Many writes of one kind, every statement of each, in one query.
    Commands,
    /// Each statement in a query of its own.
    #[cfg_attr(not(test), allow(dead_code))]
    OneByOne,
}

/// A kind of write made of fixed statements.
#[derive(Debug)]
pub struct Statements {
    /// Names the kind among the writer's commands (unique per kind).
    name: &'static str,
    /// Each statement, without its `;`.
    statements: Vec<String>,
    /// The highest placeholder: every write binds `$1` to `$params`.
    params: usize,
}

impl Statements {
    /// The kind `name` running `sql`: statements separated by `;`, with
    /// `$n` placeholders shared by all of them.
    pub fn new(name: &'static str, sql: &str) -> Self {
        let mut statements = Vec::new();
        let mut params = 0;
        let mut current = String::new();
        for piece in Piece::scan(sql) {
            match piece {
                Piece::Text(text) => current.push_str(text),
                Piece::Param(n) => {
                    params = params.max(n);
                    let _ = write!(current, "${n}");
                }
                Piece::End => statements.push(std::mem::take(&mut current)),
            }
        }
        statements.push(current);
        statements.retain(|s| !s.trim().is_empty());
        let statements = statements
            .into_iter()
            .map(|s| s.trim().to_owned())
            .collect();
        Self {
            name,
            statements,
            params,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many arguments each write binds.
    pub fn params(&self) -> usize {
        self.params
    }

    /// How many statements each write runs, each with one outcome.
    pub fn statements(&self) -> usize {
        self.statements.len()
    }

    /// The command running `writes` writes of this kind, each with its own
    /// placeholders: the `k`-th write's `$n` is `$(k * params + n)`.
    fn command(&self, writes: usize) -> String {
        let mut command = String::new();
        for k in 0..writes {
            for statement in &self.statements {
                if !command.is_empty() {
                    command.push_str(";\n");
                }
                for piece in Piece::scan(statement) {
                    match piece {
                        Piece::Text(text) => command.push_str(text),
                        Piece::Param(n) => {
                            let _ = write!(command, "${}", n + k * self.params);
                        }
                        Piece::End => command.push(';'),
                    }
                }
            }
        }
        command
    }
}

/// A piece of SQL text as far as placeholders and statement ends go.
/// Quoted strings and identifiers are text, whatever they hold.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    /// `$n`.
    Param(usize),
    /// `;`.
    End,
}

impl<'a> Piece<'a> {
    fn scan(sql: &'a str) -> impl Iterator<Item = Piece<'a>> + 'a {
        let bytes = sql.as_bytes();
        let mut at = 0;
        std::iter::from_fn(move || {
            let start = at;
            while at < bytes.len() {
                match bytes[at] {
                    quote @ (b'\'' | b'"') => {
                        // To the closing quote (a doubled quote closes and
                        // opens again, which reads the same).
                        at += 1;
                        while at < bytes.len() && bytes[at] != quote {
                            at += 1;
                        }
                        at = (at + 1).min(bytes.len());
                    }
                    b';' | b'$' if at > start => return Some(Piece::Text(&sql[start..at])),
                    b';' => {
                        at += 1;
                        return Some(Piece::End);
                    }
                    b'$' => {
                        let digits = bytes[at + 1..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count();
                        match sql[at + 1..at + 1 + digits].parse() {
                            Ok(n) => {
                                at += 1 + digits;
                                return Some(Piece::Param(n));
                            }
                            Err(_) => at += 1,
                        }
                    }
                    _ => at += 1,
                }
            }
            (at > start).then(|| Piece::Text(&sql[start..at]))
        })
    }
}

/// What one statement of a fixed write gave: its rows and the rows it
/// changed.
pub struct Outcome {
    pub rows: Vec<SqliteRow>,
    pub changes: u64,
}

/// A queued write of fixed statements.
pub(super) trait Fixed: Send {
    fn kind(&self) -> &'static Statements;
    /// Adds the write's arguments.
    fn bind(&self, args: &mut SqliteArguments<'static>) -> Result<(), BoxDynError>;
    /// Takes what the statements gave; whether the write succeeded.
    fn done(&mut self, outcome: Result<Vec<Outcome>, sqlx::Error>) -> bool;
}

/// Adds `write`'s arguments to `args`, or fails the write when it binds
/// another number than its statements take.
fn bind(write: &mut dyn Fixed, args: &mut SqliteArguments<'static>) -> bool {
    let before = args.len();
    let bound = match write.bind(args) {
        Ok(()) => args.len() - before,
        Err(e) => return write.done(Err(sqlx::Error::Encode(e))),
    };
    let kind = write.kind();
    if bound != kind.params() {
        let e = format!(
            "a {} write bound {bound} arguments; its statements take {}",
            kind.name,
            kind.params()
        );
        return write.done(Err(sqlx::Error::Encode(e.into())));
    }
    true
}

/// Runs a batch's fixed writes, kind by kind, as its [`Grouping`] says;
/// keeps the text of each command made so far.
pub(super) struct Runner {
    grouping: Grouping,
    /// Commands by kind and number of writes.
    commands: HashMap<(&'static str, usize), Arc<str>>,
}

impl Runner {
    pub(super) fn new(grouping: Grouping) -> Self {
        Self {
            grouping,
            commands: HashMap::new(),
        }
    }

    /// Runs `writes` (all of one kind, at most [`MAX_CHUNK`]) in the open
    /// transaction; the position in `writes` of the first that failed.
    pub(super) async fn run(
        &mut self,
        conn: &mut SqliteConnection,
        writes: &mut [&mut dyn Fixed],
    ) -> Result<(), usize> {
        let Some(kind) = writes.first().map(|w| w.kind()) else {
            return Ok(());
        };
        match self.grouping {
            Grouping::Commands => {
                let command = self
                    .commands
                    .entry((kind.name, writes.len()))
                    .or_insert_with(|| kind.command(writes.len()).into())
                    .clone();
                run_command(conn, kind, &command, writes).await
            }
            Grouping::OneByOne => run_one_by_one(conn, writes).await,
        }
    }
}

/// Every statement of every write in one query.
async fn run_command(
    conn: &mut SqliteConnection,
    kind: &Statements,
    command: &str,
    writes: &mut [&mut dyn Fixed],
) -> Result<(), usize> {
    let mut args = SqliteArguments::default();
    for (i, write) in writes.iter_mut().enumerate() {
        if !bind(&mut **write, &mut args) {
            return Err(i);
        }
    }
    // sqlx's SQLite driver runs the statements in turn, binding each `$n`
    // to the n-th argument, and streams each statement's rows followed by
    // its result.
    let mut results = conn.fetch_many(sqlx::query_with(command, args));
    let mut pending = 0;
    let mut outcomes = Vec::with_capacity(kind.statements());
    let mut rows = Vec::new();
    while let Some(result) = results.next().await {
        let done = match result {
            Ok(Either::Right(row)) => {
                rows.push(row);
                continue;
            }
            Ok(Either::Left(done)) => done,
            Err(e) => {
                let i = pending.min(writes.len() - 1);
                writes[i].done(Err(e));
                return Err(i);
            }
        };
        if pending == writes.len() {
            break;
        }
        outcomes.push(Outcome {
            rows: std::mem::take(&mut rows),
            changes: done.rows_affected(),
        });
        if outcomes.len() < kind.statements() {
            continue;
        }
        if !writes[pending].done(Ok(std::mem::take(&mut outcomes))) {
            return Err(pending);
        }
        pending += 1;
    }
    if pending < writes.len() {
        let e = format!("a {} command gave too few results", kind.name);
        writes[pending].done(Err(sqlx::Error::Protocol(e)));
        return Err(pending);
    }
    Ok(())
}

/// Each statement of each write in a query of its own, with the write's
/// arguments (a statement binds the placeholders it names).
async fn run_one_by_one(
    conn: &mut SqliteConnection,
    writes: &mut [&mut dyn Fixed],
) -> Result<(), usize> {
    for (i, write) in writes.iter_mut().enumerate() {
        let mut args = SqliteArguments::default();
        if !bind(&mut **write, &mut args) {
            return Err(i);
        }
        let mut outcomes = Vec::new();
        for statement in &write.kind().statements {
            let mut rows = Vec::new();
            let mut changes = 0;
            let mut results = conn.fetch_many(sqlx::query_with(statement, args.clone()));
            while let Some(result) = results.next().await {
                match result {
                    Ok(Either::Right(row)) => rows.push(row),
                    Ok(Either::Left(done)) => changes += done.rows_affected(),
                    Err(e) => {
                        drop(results);
                        write.done(Err(e));
                        return Err(i);
                    }
                }
            }
            outcomes.push(Outcome { rows, changes });
        }
        if !write.done(Ok(outcomes)) {
            return Err(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_statements_are_counted_from_the_sql() {
        let kind = Statements::new(
            "k",
            "UPDATE t SET v = $2 WHERE k = $1; \
             INSERT INTO t (k, v) SELECT $1, COALESCE($3, '$9;') WHERE NOT EXISTS (SELECT 1);",
        );
        assert_eq!(kind.params(), 3);
        assert_eq!(kind.statements(), 2);
        let one = Statements::new("one", "DELETE FROM t WHERE k = $1 AND v = $2");
        assert_eq!((one.params(), one.statements()), (2, 1));
    }

    #[test]
    fn commands_give_each_write_its_own_placeholders() {
        let kind = Statements::new(
            "two",
            "INSERT INTO t (k, v) VALUES ($1, 'a$1;'); INSERT INTO t (k, v) VALUES ($1 + 1000, $2)",
        );
        assert_eq!(
            kind.command(3),
            "INSERT INTO t (k, v) VALUES ($1, 'a$1;');\n\
             INSERT INTO t (k, v) VALUES ($1 + 1000, $2);\n\
             INSERT INTO t (k, v) VALUES ($3, 'a$1;');\n\
             INSERT INTO t (k, v) VALUES ($3 + 1000, $4);\n\
             INSERT INTO t (k, v) VALUES ($5, 'a$1;');\n\
             INSERT INTO t (k, v) VALUES ($5 + 1000, $6)"
        );
    }

    #[test]
    fn scanning_keeps_quoted_text_whole() {
        let pieces: Vec<_> = Piece::scan("a $1 'b;$2' \"c$3\"; $10").collect();
        assert_eq!(
            pieces,
            [
                Piece::Text("a "),
                Piece::Param(1),
                Piece::Text(" 'b;$2' \"c$3\""),
                Piece::End,
                Piece::Text(" "),
                Piece::Param(10),
            ]
        );
    }
}
