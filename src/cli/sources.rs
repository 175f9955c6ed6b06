//! Where each setting came from (a flag, its variable, or the default), so
//! that an error names what the user actually wrote.

use std::{collections::HashMap, ffi::OsString};

use clap::{ArgMatches, Command, error::ContextKind, parser::ValueSource};

use crate::app::SettingError;

/// The settings of the subcommand that runs, by flag name (no dashes).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The subcommand's path: `["keys", "rotate"]`.
    pub path: Vec<String>,
    from_environment: HashMap<String, bool>,
    /// Each setting's variable, by flag name.
    variables: HashMap<String, String>,
}

impl Sources {
    /// From what clap matched against `command`.
    pub fn of(command: &Command, matches: &ArgMatches) -> Self {
        let mut sources = Self::default();
        let (mut command, mut matches) = (command, matches);
        while let Some((name, sub)) = matches.subcommand() {
            let Some(found) = command.find_subcommand(name) else {
                break;
            };
            sources.path.push(name.to_owned());
            command = found;
            matches = sub;
        }
        for arg in command.get_arguments() {
            let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
                continue;
            };
            if let Some(variable) = arg.get_env().and_then(|v| v.to_str()) {
                sources
                    .variables
                    .insert(long.to_owned(), variable.to_owned());
            }
            match matches.value_source(id) {
                Some(ValueSource::EnvVariable) => {
                    sources.from_environment.insert(long.to_owned(), true);
                }
                Some(ValueSource::CommandLine) => {
                    sources.from_environment.insert(long.to_owned(), false);
                }
                _ => {}
            }
        }
        sources
    }

    /// `--tls-cert` if the flag was given, `WARDEN_TLS_CERT` if the
    /// variable was, both otherwise.
    pub fn name(&self, flag: &str, variable: &str) -> String {
        match self.from_environment.get(flag) {
            Some(true) => variable.to_owned(),
            Some(false) => format!("--{flag}"),
            None => format!("--{flag} ({variable})"),
        }
    }

    /// `message` with each `--flag (VARIABLE)` it holds (the way messages
    /// of checks over several settings name them) narrowed to the source
    /// that was used.
    pub fn rename(&self, message: &str) -> String {
        let mut message = message.to_owned();
        for (flag, variable) in &self.variables {
            let both = format!("--{flag} ({variable})");
            if message.contains(&both) {
                message = message.replace(&both, &self.name(flag, variable));
            }
        }
        message
    }

    /// A refused setting, naming the source that was used.
    pub fn describe(&self, e: &SettingError) -> String {
        format!("{}: {}", self.name(e.flag, &e.variable()), e.message)
    }
}

/// A value clap refused that came from the environment: its error, naming
/// the variable rather than the flag clap names (`'--access-token-ttl
/// <ACCESS_TOKEN_TTL>'`). `None` when the flag itself was on the command
/// line, or the error is of another kind.
pub fn blame_the_variable(
    error: &clap::Error,
    command: &Command,
    argv: &[OsString],
    var: impl Fn(&str) -> Option<OsString>,
) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let invalid = error.get(ContextKind::InvalidArg)?.to_string();
    let long = invalid.strip_prefix("--")?.split([' ', '=']).next()?;
    let on_command_line = argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
    });
    if on_command_line {
        return None;
    }
    let subcommand = leaf(command, argv);
    let arg = subcommand
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_str()?.to_owned();
    var(&variable)?;
    let rendered = error.render().to_string();
    Some(rendered.replace(&format!("'{invalid}'"), &variable))
}

/// The subcommand that `argv` names (the words that are subcommands, in
/// order), or `command` itself.
fn leaf<'c>(command: &'c Command, argv: &[OsString]) -> &'c Command {
    let mut current = command;
    for word in argv.iter().skip(1).filter_map(|a| a.to_str()) {
        if word.starts_with('-') {
            continue;
        }
        match current.find_subcommand(word) {
            Some(sub) => current = sub,
            None => break,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::config::Cli;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable() {
        let mut command = Cli::command();
        command.build();
        let words = argv(&["warden", "serve"]);
        // The error clap makes of the bad value (the process environment
        // is not set here: `var` stands in for it).
        let mut serve = command.find_subcommand("serve").unwrap().clone();
        let error = serve
            .try_get_matches_from_mut(["serve", "--access-token-ttl", "forever"])
            .unwrap_err();
        let env = |name: &str| (name == "WARDEN_ACCESS_TOKEN_TTL").then(|| "forever".into());
        let blamed = blame_the_variable(&error, &command, &words, env).unwrap();
        assert!(blamed.contains("WARDEN_ACCESS_TOKEN_TTL"), "{blamed}");
        assert!(!blamed.contains("--access-token-ttl"), "{blamed}");
        let given = argv(&["warden", "serve", "--access-token-ttl", "forever"]);
        assert!(blame_the_variable(&error, &command, &given, env).is_none());
    }

    #[test]
    fn a_message_naming_flag_and_variable_keeps_the_one_that_was_used() {
        let command = Cli::command();
        let matches = command
            .clone()
            .try_get_matches_from(["warden", "serve", "--refresh-token-ttl", "2s"])
            .unwrap();
        let sources = Sources::of(&command, &matches);
        assert_eq!(sources.path, ["serve"]);
        let message = "--refresh-token-ttl (WARDEN_REFRESH_TOKEN_TTL) must not be shorter than \
                       --access-token-ttl (WARDEN_ACCESS_TOKEN_TTL)";
        assert_eq!(
            sources.rename(message),
            "--refresh-token-ttl must not be shorter than \
             --access-token-ttl (WARDEN_ACCESS_TOKEN_TTL)"
        );
    }
}
