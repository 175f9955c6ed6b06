//! A failure as one line: its causes outermost first, each said once,
//! without what only the driver's authors need.

/// `e` and its causes joined by ": ". A cause whose text an outer one
/// already holds (sea-orm's "Connection Error: {sqlx error}" and then the
/// sqlx error itself; tonic's "tcp connect error" twice) is left out, as
/// are "error returned from database:", a server source line ("at line
/// 948") and "(os error 111)".
pub fn one_line(e: &anyhow::Error) -> String {
    causes(e.chain().map(ToString::to_string))
}

pub(super) fn causes(chain: impl Iterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for text in chain {
        let text = clean(&text);
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn clean(text: &str) -> String {
    let mut text = text.to_owned();
    for noise in [
        "error returned from database: ",
        "Connection Error: ",
        "Execution Error: ",
        "Query Error: ",
    ] {
        text = text.replace(noise, "");
    }
    let text = strip_numbered(&text, " at line ");
    strip_os_error(&text).trim().to_owned()
}

/// `text` without each `marker` followed by digits.
fn strip_numbered(text: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push_str(&rest[..at + marker.len()]);
        } else {
            out.push_str(&rest[..at]);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn strip_os_error(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        out.push_str(&rest[..at]);
        rest = match rest[at..].find(')') {
            Some(end) => &rest[at + end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(parts: &[&str]) -> String {
        causes(parts.iter().map(|p| (*p).to_owned()))
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        assert_eq!(
            chain(&[
                "cannot connect to 127.0.0.1:1",
                "tcp connect error",
                "tcp connect error",
                "Connection refused (os error 111)"
            ]),
            "cannot connect to 127.0.0.1:1: tcp connect error: Connection refused"
        );
    }

    #[test]
    fn driver_internals_are_left_out() {
        assert_eq!(
            chain(&[
                "cannot migrate the database",
                "Execution Error: error returned from database: relation \"x\" does not exist \
                 at line 948",
                "relation \"x\" does not exist at line 948",
            ]),
            "cannot migrate the database: relation \"x\" does not exist"
        );
        assert_eq!(strip_numbered("at line x", " at line "), "at line x");
    }
}
