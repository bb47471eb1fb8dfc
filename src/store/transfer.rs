//! The export format of `pushtoken export` and `pushtoken import`: the whole
//! database as UTF-8 JSON Lines, the way from SQLite to PostgreSQL and back.
//!
//! Line 1 is [`HEADER`]; every other line is one stored record,
//! `{"kind": K, …its columns…}`, kinds in the order of [`KINDS`] and each
//! kind's records by primary key, so an export depends only on the data:
//! the same records give the same bytes from either database. Integers are
//! JSON integers, text JSON strings (UTF-8 as it is), NULL `null`.
//!
//! [`KINDS`] is the one list of what is exported and imported: a column
//! added to a table is a line there, and both directions follow. The
//! push-socket connections held now (`socket_connections`) are not in it:
//! they describe processes, not data.
//!
//! Both directions run on one connection inside one transaction, which
//! the backend opens and commits: an export reads one snapshot, row by row
//! as the database sends them; an import reads its input line by line,
//! stores records in multi-row `INSERT`s as it goes, and fails whole on the
//! first line it cannot take (the backend then rolls everything back).

use std::collections::BTreeMap;
use std::io::Write;
use std::marker::PhantomData;

use anyhow::Context;
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Postgres, Row, Sqlite, Type};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Line 1 of every export.
pub const HEADER: &str = r#"{"format":"pushtoken-export","version":1}"#;
/// The header's `format`.
const FORMAT: &str = "pushtoken-export";
/// The header's `version`: the only one this build reads or writes.
const VERSION: u64 = 1;

/// The longest line an import takes (the largest record, an event, is
/// under 10 KiB), so a file without line breaks cannot fill the memory.
const MAX_LINE: u64 = 1 << 20;

/// The most rows one `INSERT` stores.
const MAX_ROWS_PER_INSERT: usize = 1000;
/// The most arguments one statement binds (SQLite's limit is 32,766,
/// PostgreSQL's 65,535).
const MAX_ARGUMENTS: usize = 32_000;

/// What a stored column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    Integer,
    Text,
}

/// A stored column.
#[derive(Debug)]
struct Column {
    name: &'static str,
    holds: Holds,
    nullable: bool,
}

const fn integer(name: &'static str) -> Column {
    Column {
        name,
        holds: Holds::Integer,
        nullable: false,
    }
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        holds: Holds::Text,
        nullable: false,
    }
}

const fn optional_text(name: &'static str) -> Column {
    Column {
        name,
        holds: Holds::Text,
        nullable: true,
    }
}

/// One kind of record: a table with every column it stores, in the
/// order an export writes them.
#[derive(Debug)]
pub struct Kind {
    /// The `kind` of its lines.
    pub name: &'static str,
    table: &'static str,
    columns: &'static [Column],
    /// The primary key: the order of the kind's lines.
    key: &'static [&'static str],
    /// The column the database numbers by itself (PostgreSQL's identity,
    /// SQLite's AUTOINCREMENT), if any.
    numbered: Option<&'static str>,
}

/// Every kind of record, in the order of an export, which is also an
/// order that stores every record after those it refers to.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "user",
        table: "users",
        columns: &[
            integer("id"),
            text("username"),
            text("password_hash"),
            optional_text("email"),
            optional_text("phone"),
            optional_text("realm"),
            integer("created_at"),
        ],
        key: &["id"],
        numbered: Some("id"),
    },
    Kind {
        name: "session",
        table: "sessions",
        columns: &[
            integer("id"),
            integer("user_id"),
            text("token_hash"),
            text("refresh_hash"),
            integer("created_at"),
            integer("expires_at"),
            integer("refresh_expires_at"),
            integer("login_id"),
            integer("login_at"),
        ],
        key: &["id"],
        numbered: Some("id"),
    },
    Kind {
        name: "used_refresh_key",
        table: "used_refresh_keys",
        columns: &[
            text("refresh_hash"),
            integer("user_id"),
            integer("login_id"),
            integer("used_at"),
            integer("expires_at"),
        ],
        key: &["refresh_hash"],
        numbered: None,
    },
    Kind {
        name: "push_token",
        table: "push_tokens",
        columns: &[
            integer("user_id"),
            text("family"),
            integer("serial"),
            text("push_token"),
            text("language"),
            integer("dev"),
            text("bundleid"),
            text("os"),
            text("os_token"),
            text("push_platform"),
            text("phone_model"),
            integer("created_at"),
            integer("updated_at"),
        ],
        key: &["user_id", "family", "serial"],
        numbered: None,
    },
    Kind {
        name: "socket_client",
        table: "socket_clients",
        columns: &[
            text("token"),
            text("imei"),
            text("imsi"),
            text("type"),
            text("brand"),
            text("bundle_id"),
            integer("created_at"),
            integer("registered_at"),
        ],
        key: &["token"],
        numbered: None,
    },
    Kind {
        name: "event",
        table: "events",
        columns: &[
            integer("id"),
            integer("user_id"),
            text("family"),
            text("type"),
            text("uid"),
            integer("time"),
            text("body"),
            integer("created_at"),
            integer("recorded_ms"),
        ],
        key: &["id"],
        numbered: Some("id"),
    },
    Kind {
        name: "queued_event",
        table: "queued_events",
        columns: &[text("token"), integer("event_id"), integer("expires_at")],
        key: &["token", "event_id"],
        numbered: None,
    },
    Kind {
        name: "secret",
        table: "server_secrets",
        columns: &[text("name"), text("value"), integer("created_at")],
        key: &["name"],
        numbered: None,
    },
];

/// The kind of the server's own secrets: an import replaces the ones a
/// first start made, where every other kind must find its table empty.
const SECRET: &str = "secret";

/// Tables of state that lasts as long as a process, emptied by an import.
const TRANSIENT_TABLES: &[&str] = &["socket_connections"];

impl Kind {
    /// The kind whose lines say `kind`.
    fn named(kind: &str) -> Option<&'static Kind> {
        KINDS.iter().find(|k| k.name == kind)
    }

    fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Reads every record of the kind, in key order (text by its bytes).
    fn select_sql<DB: TransferDialect>(&self) -> String {
        let columns = self.column_list();
        let order = self
            .key
            .iter()
            .map(|name| match self.column(name).map(|c| c.holds) {
                Some(Holds::Text) => format!("\"{name}\"{}", DB::BYTE_ORDER),
                _ => format!("\"{name}\""),
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("SELECT {columns} FROM {} ORDER BY {order}", self.table)
    }

    /// Stores `rows` records of the kind, their values in column order.
    fn insert_sql<DB: TransferDialect>(&self, rows: usize) -> String {
        let width = self.columns.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
            self.column_list()
        );
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..width {
                if column > 0 {
                    sql.push_str(", ");
                }
                DB::placeholder(&mut sql, row * width + column + 1);
            }
            sql.push(')');
        }
        sql
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How many records one `INSERT` stores.
    fn rows_per_insert(&self) -> usize {
        (MAX_ARGUMENTS / self.columns.len()).clamp(1, MAX_ROWS_PER_INSERT)
    }

    /// Appends a record's line, `{"kind":…,<column>:<value>,…}\n`, to `line`.
    fn write_line<R: Row>(&self, row: &R, line: &mut Vec<u8>) -> anyhow::Result<()>
    where
        usize: ColumnIndex<R>,
        for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    {
        line.extend_from_slice(b"{\"kind\":");
        serde_json::to_writer(&mut *line, self.name)?;
        for (i, column) in self.columns.iter().enumerate() {
            line.push(b',');
            serde_json::to_writer(&mut *line, column.name)?;
            line.push(b':');
            let read = |e| anyhow::anyhow!("{}.{}: {e}", self.table, column.name);
            match column.holds {
                Holds::Integer => match row.try_get::<Option<i64>, _>(i).map_err(read)? {
                    Some(n) => write!(line, "{n}")?,
                    None => line.extend_from_slice(b"null"),
                },
                Holds::Text => match row.try_get::<Option<String>, _>(i).map_err(read)? {
                    Some(s) => serde_json::to_writer(&mut *line, &s)?,
                    None => line.extend_from_slice(b"null"),
                },
            }
        }
        line.extend_from_slice(b"}\n");
        Ok(())
    }

    /// The values of a record's line, in column order, checked against
    /// the columns: every one present with its type, no other field.
    fn values(&self, record: &Map<String, Value>, at: u64) -> anyhow::Result<Vec<Stored>> {
        if let Some(field) = record
            .keys()
            .find(|field| *field != "kind" && self.column(field).is_none())
        {
            anyhow::bail!("line {at}: a {} has no field {}", self.name, shown(field));
        }
        self.columns
            .iter()
            .map(|column| {
                let value = record.get(column.name).with_context(|| {
                    format!("line {at}: the {} lacks {:?}", self.name, column.name)
                })?;
                let stored = match (column.holds, value) {
                    (Holds::Integer, Value::Null) if column.nullable => Some(Stored::Integer(None)),
                    (Holds::Text, Value::Null) if column.nullable => Some(Stored::Text(None)),
                    (Holds::Integer, Value::Number(n)) => {
                        n.as_i64().map(|n| Stored::Integer(Some(n)))
                    }
                    (Holds::Text, Value::String(s)) => Some(Stored::Text(Some(s.clone()))),
                    _ => None,
                };
                stored.with_context(|| {
                    let wanted = match (column.holds, column.nullable) {
                        (Holds::Integer, false) => "a 64-bit integer",
                        (Holds::Integer, true) => "a 64-bit integer or null",
                        (Holds::Text, false) => "a string",
                        (Holds::Text, true) => "a string or null",
                    };
                    format!(
                        "line {at}: the {}'s {:?} is not {wanted}",
                        self.name, column.name
                    )
                })
            })
            .collect()
    }
}

/// A value to store (`None`: NULL, typed as its column).
#[derive(Debug)]
enum Stored {
    Integer(Option<i64>),
    Text(Option<String>),
}

/// A text of the input, quoted on one line and cut short if long, for an
/// error.
fn shown(text: &str) -> String {
    const MOST: usize = 40;
    match text.char_indices().nth(MOST) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// How many records of each kind an import stored, by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported(pub BTreeMap<&'static str, u64>);

impl Imported {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Imported {
    /// `3 user, 5 session, …` in the order of an export.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = KINDS
            .iter()
            .map(|kind| format!("{} {}", self.0.get(kind.name).unwrap_or(&0), kind.name))
            .collect();
        write!(f, "{}", counts.join(", "))
    }
}

/// What differs between the databases for an export or an import.
pub(super) trait TransferDialect: sqlx::Database {
    /// Appended to a text column in `ORDER BY`, so that both databases
    /// order text by its bytes (SQLite always does; PostgreSQL's default
    /// collation follows the locale).
    const BYTE_ORDER: &'static str;

    /// Run first in an export's transaction: makes every read of it see
    /// one snapshot, if the transaction alone does not.
    const SNAPSHOT: Option<&'static str>;

    /// Run first in an import's transaction: keeps every other writer out
    /// of the tables until it ends, if its first write does not.
    const EXCLUSIVE: Option<&'static str>;

    /// The statement that makes the database number new rows of `table`
    /// after the largest `column` stored, if inserting them did not.
    fn renumber(table: &str, column: &str) -> Option<String>;

    /// Appends the placeholder of argument `n` (from 1) to `sql`.
    fn placeholder(sql: &mut String, n: usize);
}

impl TransferDialect for Sqlite {
    const BYTE_ORDER: &'static str = "";
    /// A read transaction in WAL mode sees one snapshot from its first
    /// read on.
    const SNAPSHOT: Option<&'static str> = None;
    /// The import's first statement, a write, takes the database's one
    /// write lock until the transaction ends.
    const EXCLUSIVE: Option<&'static str> = None;

    /// Nothing: AUTOINCREMENT keeps the largest rowid ever inserted, given
    /// or not, and numbers after it.
    fn renumber(_: &str, _: &str) -> Option<String> {
        None
    }

    /// `?`, the arguments in order: SQLite finds the name of a numbered
    /// placeholder (`$N`) by a walk through the statement's list of names,
    /// so binding thousands of them costs the square of their number (a
    /// thousand-row `INSERT` took a third of a second to bind).
    fn placeholder(sql: &mut String, _: usize) {
        sql.push('?');
    }
}

impl TransferDialect for Postgres {
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";
    const SNAPSHOT: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    /// Readers may read on (they see the tables empty until the commit).
    const EXCLUSIVE: Option<&'static str> = Some(
        "LOCK TABLE users, sessions, used_refresh_keys, push_tokens, socket_clients, \
         socket_connections, events, queued_events, server_secrets IN EXCLUSIVE MODE",
    );

    /// Moves the identity's sequence to the largest value stored (`setval`
    /// of NULL, on an empty table, changes nothing).
    fn renumber(table: &str, column: &str) -> Option<String> {
        Some(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), MAX(\"{column}\")) \
             FROM {table}"
        ))
    }

    fn placeholder(sql: &mut String, n: usize) {
        use std::fmt::Write;
        let _ = write!(sql, "${n}");
    }
}

/// Export and import on a connection of `DB` (`Sqlite` or `Postgres`),
/// inside a transaction the caller opened.
pub(super) struct Transfer<DB>(PhantomData<DB>);

impl<DB> Transfer<DB>
where
    DB: TransferDialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Writes the header and every record to `out`; how many records.
    pub async fn export(
        conn: &mut DB::Connection,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<u64> {
        if let Some(snapshot) = DB::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *conn).await?;
        }
        writeln!(out, "{HEADER}").context("cannot write the export")?;
        let mut records = 0;
        let mut line = Vec::with_capacity(1024);
        for kind in KINDS {
            let sql = kind.select_sql::<DB>();
            let mut rows = sqlx::query(&sql).fetch(&mut *conn);
            while let Some(row) = rows
                .try_next()
                .await
                .with_context(|| format!("cannot read {}", kind.table))?
            {
                line.clear();
                kind.write_line(&row, &mut line)?;
                out.write_all(&line).context("cannot write the export")?;
                records += 1;
            }
        }
        out.flush().context("cannot write the export")?;
        Ok(records)
    }

    /// Stores the export read from `input` in the database, which must hold
    /// no record but the server's secrets (which it replaces). The first
    /// error ends it: the caller then rolls the transaction back.
    pub async fn import(
        conn: &mut DB::Connection,
        input: &mut (dyn AsyncBufRead + Send + Unpin),
    ) -> anyhow::Result<Imported> {
        if let Some(exclusive) = DB::EXCLUSIVE {
            sqlx::query(exclusive).execute(&mut *conn).await?;
        }
        for table in TRANSIENT_TABLES {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        for secrets in KINDS.iter().filter(|k| k.name == SECRET) {
            sqlx::query(&format!("DELETE FROM {}", secrets.table))
                .execute(&mut *conn)
                .await?;
        }
        Self::refuse_records(conn).await?;

        let mut lines = Lines::new(input);
        let header = lines
            .next()
            .await?
            .context("the input is empty: no export header")?;
        check_header(&header)?;

        let mut imported = Imported::default();
        let mut batch = Batch::default();
        while let Some(record) = lines.next().await? {
            let at = lines.number;
            let name = match record.get("kind") {
                Some(Value::String(name)) => name,
                Some(_) => anyhow::bail!("line {at}: its \"kind\" is not a string"),
                None => anyhow::bail!("line {at}: it has no \"kind\""),
            };
            let kind = Kind::named(name)
                .with_context(|| format!("line {at}: unknown kind {}", shown(name)))?;
            let values = kind.values(&record, at)?;
            if batch.kind.is_some_and(|k| !std::ptr::eq(k, kind)) {
                Self::store(conn, &mut batch, &mut imported).await?;
            }
            batch.push(kind, values, at);
            if batch.rows == kind.rows_per_insert() {
                Self::store(conn, &mut batch, &mut imported).await?;
            }
        }
        Self::store(conn, &mut batch, &mut imported).await?;
        for kind in KINDS {
            let Some(sql) = kind
                .numbered
                .and_then(|column| DB::renumber(kind.table, column))
            else {
                continue;
            };
            sqlx::query(&sql)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("cannot renumber {}", kind.table))?;
        }
        Ok(imported)
    }

    /// An error naming the tables that hold records, if any does (the
    /// server's secrets aside).
    async fn refuse_records(conn: &mut DB::Connection) -> anyhow::Result<()> {
        let mut held = Vec::new();
        for kind in KINDS.iter().filter(|k| k.name != SECRET) {
            let found = sqlx::query(&format!("SELECT 1 FROM {} LIMIT 1", kind.table))
                .fetch_optional(&mut *conn)
                .await?;
            if found.is_some() {
                held.push(kind.table);
            }
        }
        anyhow::ensure!(
            held.is_empty(),
            "the database is not empty (it holds {}): import only into an empty database",
            held.join(", ")
        );
        Ok(())
    }

    /// Stores the batch's records with one `INSERT`, and empties it.
    async fn store(
        conn: &mut DB::Connection,
        batch: &mut Batch,
        imported: &mut Imported,
    ) -> anyhow::Result<()> {
        let Some(kind) = batch.kind else {
            return Ok(());
        };
        let sql = kind.insert_sql::<DB>(batch.rows);
        let mut query = sqlx::query(&sql);
        for value in &batch.values {
            query = match value {
                Stored::Integer(n) => query.bind(*n),
                Stored::Text(s) => query.bind(s.as_deref()),
            };
        }
        query.execute(&mut *conn).await.with_context(|| {
            let lines = if batch.first_line == batch.last_line {
                format!("line {}", batch.first_line)
            } else {
                format!("lines {}-{}", batch.first_line, batch.last_line)
            };
            format!("{lines}: cannot store the {} records", kind.name)
        })?;
        *imported.0.entry(kind.name).or_default() += batch.rows as u64;
        *batch = Batch::default();
        Ok(())
    }
}

/// Checks line 1: the header of an export of this version.
fn check_header(header: &Map<String, Value>) -> anyhow::Result<()> {
    anyhow::ensure!(
        header.get("format").and_then(Value::as_str) == Some(FORMAT),
        "line 1 is not the header of a pushtoken export"
    );
    match header.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => Ok(()),
        Some(version) => {
            // Compact JSON is one line; a long one is cut.
            let version = version.to_string();
            let version = match version.char_indices().nth(20) {
                Some((cut, _)) => format!("{}…", &version[..cut]),
                None => version,
            };
            anyhow::bail!(
                "the export is of version {version}; this pushtoken reads version {VERSION} only"
            )
        }
        None => anyhow::bail!("line 1 is not the header of a pushtoken export (no version)"),
    }
}

/// Records read but not stored yet, all of one kind.
#[derive(Default)]
struct Batch {
    kind: Option<&'static Kind>,
    /// Their values, record after record.
    values: Vec<Stored>,
    rows: usize,
    first_line: u64,
    last_line: u64,
}

impl Batch {
    fn push(&mut self, kind: &'static Kind, values: Vec<Stored>, at: u64) {
        if self.kind.is_none() {
            self.kind = Some(kind);
            self.first_line = at;
        }
        self.values.extend(values);
        self.rows += 1;
        self.last_line = at;
    }
}

/// The JSON objects of an input, one a line.
struct Lines<'a> {
    input: &'a mut (dyn AsyncBufRead + Send + Unpin),
    buffer: Vec<u8>,
    /// The number of the line last read (1 is the header).
    number: u64,
}

impl<'a> Lines<'a> {
    fn new(input: &'a mut (dyn AsyncBufRead + Send + Unpin)) -> Self {
        Self {
            input,
            buffer: Vec::with_capacity(1024),
            number: 0,
        }
    }

    /// The next line's object, `None` at the end of the input. A line that
    /// is not a JSON object, is too long or has no line break at its end
    /// (the input was cut short) is an error.
    async fn next(&mut self) -> anyhow::Result<Option<Map<String, Value>>> {
        self.buffer.clear();
        let read = (&mut *self.input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut self.buffer)
            .await
            .context("cannot read the input")?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        let at = self.number;
        if self.buffer.last() != Some(&b'\n') {
            anyhow::ensure!(
                read as u64 <= MAX_LINE,
                "line {at} is longer than {MAX_LINE} bytes"
            );
            anyhow::bail!(
                "line {at} is cut short (no line break at its end): the export is incomplete"
            );
        }
        let value: Value = serde_json::from_slice(&self.buffer).map_err(|e| {
            anyhow::anyhow!(
                "line {at} is not JSON ({}, column {})",
                reason(&e),
                e.column()
            )
        })?;
        match value {
            Value::Object(record) => Ok(Some(record)),
            _ => anyhow::bail!("line {at} is not a JSON object"),
        }
    }
}

/// What is wrong with a line that is not JSON, in a few words.
fn reason(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "it ends early",
        Category::Syntax => "a syntax error",
        Category::Data => "a value out of range",
        Category::Io => "unreadable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_names_its_key_and_numbered_columns_among_its_columns() {
        for kind in KINDS {
            for key in kind.key {
                assert!(kind.column(key).is_some(), "{}: key {key}", kind.name);
            }
            if let Some(numbered) = kind.numbered {
                assert_eq!(
                    kind.column(numbered).map(|c| c.holds),
                    Some(Holds::Integer),
                    "{}",
                    kind.name
                );
            }
            assert!(kind.column("kind").is_none(), "{}", kind.name);
        }
    }

    #[test]
    fn the_kinds_are_those_of_the_export_format_in_its_order() {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "user",
                "session",
                "used_refresh_key",
                "push_token",
                "socket_client",
                "event",
                "queued_event",
                "secret"
            ]
        );
    }

    #[test]
    fn an_insert_binds_as_many_arguments_as_its_rows_hold_within_both_limits() {
        for kind in KINDS {
            let rows = kind.rows_per_insert();
            let arguments = rows * kind.columns.len();
            assert!(arguments <= MAX_ARGUMENTS, "{}", kind.name);
            let sql = kind.insert_sql::<Postgres>(rows);
            assert!(sql.ends_with(&format!("${arguments})")), "{}", kind.name);
            assert_eq!(sql.matches('$').count(), arguments, "{}", kind.name);
            let sql = kind.insert_sql::<Sqlite>(rows);
            assert_eq!(sql.matches('?').count(), arguments, "{}", kind.name);
            assert!(!sql.contains('$'), "{}", kind.name);
        }
    }

    #[test]
    fn text_keys_are_ordered_by_their_bytes_on_postgres() {
        let sql = Kind::named("push_token").unwrap().select_sql::<Postgres>();
        assert!(
            sql.ends_with(r#"ORDER BY "user_id", "family" COLLATE "C", "serial""#),
            "{sql}"
        );
        let sql = Kind::named("push_token").unwrap().select_sql::<Sqlite>();
        assert!(
            sql.ends_with(r#"ORDER BY "user_id", "family", "serial""#),
            "{sql}"
        );
    }

    #[test]
    fn a_record_must_have_every_column_with_its_type_and_no_other_field() {
        let kind = Kind::named("secret").unwrap();
        let record = |v: Value| v.as_object().unwrap().clone();
        let good = record(
            serde_json::json!({"kind": "secret", "name": "n", "value": "v", "created_at": 1}),
        );
        assert_eq!(kind.values(&good, 2).unwrap().len(), 3);
        for (bad, says) in [
            (
                serde_json::json!({"kind": "secret", "name": "n", "value": "v"}),
                "lacks \"created_at\"",
            ),
            (
                serde_json::json!({"kind": "secret", "name": "n", "value": "v", "created_at": 1, "x": 2}),
                "has no field \"x\"",
            ),
            (
                serde_json::json!({"kind": "secret", "name": "n", "value": "v", "created_at": 1.5}),
                "\"created_at\" is not a 64-bit integer",
            ),
            (
                serde_json::json!({"kind": "secret", "name": null, "value": "v", "created_at": 1}),
                "\"name\" is not a string",
            ),
        ] {
            let error = kind.values(&record(bad), 7).unwrap_err().to_string();
            assert!(error.starts_with("line 7: "), "{error}");
            assert!(error.contains(says), "{error}");
        }
        let user = Kind::named("user").unwrap();
        let nulls = record(serde_json::json!({
            "kind": "user", "id": 1, "username": "u", "password_hash": "h",
            "email": null, "phone": null, "realm": null, "created_at": 0,
        }));
        assert_eq!(user.values(&nulls, 2).unwrap().len(), 7);
    }
}
