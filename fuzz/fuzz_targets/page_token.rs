//! `page_token::open` with any token, keys and filters must never panic and
//! must refuse every token that `seal` did not make, with one of the keys,
//! for the same filters. What `seal` made opens to the same cursor.

#![no_main]

use arbitrary::Arbitrary;
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use warden::{
    domain::page_token::{self, Cursor},
    domain::types::{UserFilter, UserStatus as Status},
};
use warden_fuzz::{b64, unb64};

#[derive(Arbitrary, Debug)]
struct Input {
    /// The server's keys, newest first (at most four are used).
    keys: Vec<[u8; 32]>,
    /// The filters of the request that presents the token.
    filter: Filter,
    token: Token,
}

#[derive(Arbitrary, Debug, Clone, PartialEq)]
struct Filter {
    status: Option<StatusChoice>,
    email_contains: Option<String>,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum StatusChoice {
    Pending,
    Approved,
    Disabled,
}

impl Filter {
    fn to_domain(&self) -> UserFilter {
        UserFilter {
            status: self.status.map(|s| match s {
                StatusChoice::Pending => Status::Pending,
                StatusChoice::Approved => Status::Approved,
                StatusChoice::Disabled => Status::Disabled,
            }),
            email_contains: self.email_contains.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Token {
    /// Any text.
    Raw(String),
    /// Any bytes, as base64url.
    Bytes(Vec<u8>),
    /// A real token, then changed.
    Sealed {
        /// Which of the keys seals it; past the end, a key of its own.
        key: u8,
        own_key: [u8; 32],
        micros: i64,
        id: u128,
        filter: Filter,
        edits: Vec<Edit>,
    },
}

#[derive(Arbitrary, Debug)]
enum Edit {
    FlipBits {
        at: u8,
        mask: u8,
    },
    Truncate(u8),
    Append(Vec<u8>),
    /// Whitespace or text around the token.
    Wrap {
        before: String,
        after: String,
    },
}

fuzz_target!(|input: Input| {
    let keys: Vec<[u8; 32]> = input.keys.into_iter().take(4).collect();
    let filter = input.filter.to_domain();
    let (token, sealed) = match input.token {
        Token::Raw(text) => (text, None),
        Token::Bytes(bytes) => (b64(&bytes), None),
        Token::Sealed {
            key,
            own_key,
            micros,
            id,
            filter: sealed_for,
            edits,
        } => {
            let Some(created_at) = DateTime::from_timestamp_micros(micros) else {
                return;
            };
            let cursor = Cursor {
                created_at,
                id: Uuid::from_u128(id),
            };
            let key = keys.get(usize::from(key)).copied().unwrap_or(own_key);
            let original = page_token::seal(&key, cursor, &sealed_for.to_domain());
            let mut token = original.clone();
            for edit in &edits {
                token = match edit {
                    Edit::FlipBits { at, mask } => {
                        let mut bytes = unb64(&token).unwrap_or_default();
                        if !bytes.is_empty() {
                            let i = usize::from(*at) % bytes.len();
                            bytes[i] ^= mask;
                        }
                        b64(&bytes)
                    }
                    Edit::Truncate(len) => {
                        let mut bytes = unb64(&token).unwrap_or_default();
                        bytes.truncate(usize::from(*len));
                        b64(&bytes)
                    }
                    Edit::Append(more) => {
                        let mut bytes = unb64(&token).unwrap_or_default();
                        bytes.extend_from_slice(more);
                        b64(&bytes)
                    }
                    Edit::Wrap { before, after } => format!("{before}{token}{after}"),
                };
            }
            let unchanged = token == original;
            (token, Some((key, cursor, sealed_for, unchanged)))
        }
    };

    let opened = page_token::open(&keys, &token, &filter);

    if let Ok(cursor) = opened {
        // Only a token sealed here, for these filters, opens: nothing else
        // re-seals to the same text.
        assert!(
            keys.iter()
                .any(|key| page_token::seal(key, cursor, &filter) == token.trim()),
            "opened a token the server did not seal: {token:?}"
        );
    }
    if let Some((key, cursor, sealed_for, unchanged)) = sealed {
        let ours = keys.contains(&key);
        match (ours, unchanged, sealed_for == input.filter) {
            (true, true, true) => assert_eq!(opened, Ok(cursor), "round trip"),
            (true, true, false) => {
                let refused = opened.expect_err("a token of other filters opened");
                assert!(refused.description.contains("other filters"), "{refused:?}");
            }
            (false, _, _) => assert!(opened.is_err(), "a token sealed with a foreign key"),
            (true, false, _) => {}
        }
    }
});
