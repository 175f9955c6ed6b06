//! Logs: human-readable text or JSON lines, filtered by `WARDEN_LOG`.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogArgs, LogFormat};

/// PostgreSQL's notices reach the log through sqlx at WARN. The one warden
/// causes is "there is no transaction in progress", from the ROLLBACK that
/// follows a COMMIT refused for a serialization conflict (which is then
/// retried): noise, once per conflict. Kept quiet unless `WARDEN_LOG` says
/// something about sqlx itself.
const QUIET_NOTICES: &str = "sqlx::postgres::notice=error";

fn filter(log: &str) -> anyhow::Result<EnvFilter> {
    let filter = EnvFilter::try_new(log)
        .map_err(|e| anyhow::anyhow!("WARDEN_LOG `{log}` is not a log filter: {e}"))?;
    if log.contains("sqlx") {
        return Ok(filter);
    }
    Ok(filter.add_directive(QUIET_NOTICES.parse()?))
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = filter(&args.log)?;
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_notices_are_quiet_unless_the_filter_names_sqlx() {
        assert!(filter("info").unwrap().to_string().contains(QUIET_NOTICES));
        assert!(
            !filter("info,sqlx=debug")
                .unwrap()
                .to_string()
                .contains(QUIET_NOTICES)
        );
        assert!(filter("not a filter [").is_err());
    }
}
