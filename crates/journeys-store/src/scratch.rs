//! Whole databases for tools that run on one of their own (the test kit, the load generator):
//! creating and dropping a database on a MySQL/MariaDB server, naming it in a URL, and
//! removing a SQLite database's files.

use std::path::Path;

use sea_orm::{ConnectionTrait, Database};

use crate::error::StoreError;

/// Creates the empty database `database` (`utf8mb4`, binary collation, as migrations expect)
/// on the MySQL/MariaDB server at `server_url`; returns the URL to connect to it.
///
/// # Errors
/// When the server cannot be reached or refuses to create the database.
pub async fn create_database(server_url: &str, database: &str) -> Result<String, StoreError> {
    let server = Database::connect(server_url).await?;
    server
        .execute_unprepared(&format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ))
        .await?;
    server.close().await?;
    Ok(database_url(server_url, database))
}

/// Drops `database` on the server at `server_url`, if it exists.
///
/// # Errors
/// When the server cannot be reached or refuses to drop the database.
pub async fn drop_database(server_url: &str, database: &str) -> Result<(), StoreError> {
    let server = Database::connect(server_url).await?;
    server
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .await?;
    server.close().await?;
    Ok(())
}

/// Removes the SQLite database file at `path` with its `-wal` and `-shm` companions; files
/// already gone are fine.
///
/// # Errors
/// When a file exists but cannot be removed.
pub fn remove_sqlite_files(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

/// `server_url` with its path replaced by `/database` (query parameters kept): how a tool
/// that creates a database on a server (tests, the load generator) connects to it.
#[must_use]
pub fn database_url(server_url: &str, database: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_path_and_keeps_query() {
        assert_eq!(
            database_url("mysql://root@127.0.0.1:3306", "t1"),
            "mysql://root@127.0.0.1:3306/t1"
        );
        assert_eq!(
            database_url("mysql://root@127.0.0.1:3306/", "t1"),
            "mysql://root@127.0.0.1:3306/t1"
        );
        assert_eq!(
            database_url("mysql://u:p@h:3306/other?ssl-mode=disabled", "t1"),
            "mysql://u:p@h:3306/t1?ssl-mode=disabled"
        );
    }
}
