//! Database URLs: naming one database on a MySQL/MariaDB server.

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
