//! The `authorization: Bearer <token>` check. The interceptor verifies the
//! token itself (signature and claims, no database) and leaves the outcome in
//! the request extensions; handlers take it from there and never parse
//! headers.

use std::sync::Arc;

use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::{
    domain::error::Error,
    domain::{
        clock::Clock,
        tokens::{TokenService, VerifiedToken},
    },
};

/// What the interceptor found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer {
    Verified(VerifiedToken),
    Missing,
    Invalid,
    Expired,
}

impl Bearer {
    pub fn into_result(self) -> Result<VerifiedToken, Error> {
        match self {
            Self::Verified(token) => Ok(token),
            Self::Missing => Err(Error::TokenMissing),
            Self::Invalid => Err(Error::TokenInvalid),
            Self::Expired => Err(Error::TokenExpired),
        }
    }
}

/// The verified bearer token of a request that went through `BearerCheck`.
pub fn bearer<T>(request: &Request<T>) -> Result<VerifiedToken, Error> {
    request
        .extensions()
        .get::<Bearer>()
        .copied()
        .unwrap_or(Bearer::Missing)
        .into_result()
}

#[derive(Clone)]
pub struct BearerCheck {
    tokens: Arc<TokenService>,
    clock: Arc<dyn Clock>,
    /// Refuse the call when the token is not good (every RPC of the service
    /// needs one), or only record the outcome (some do not).
    required: bool,
}

impl BearerCheck {
    pub fn optional(tokens: Arc<TokenService>, clock: Arc<dyn Clock>) -> Self {
        Self {
            tokens,
            clock,
            required: false,
        }
    }

    pub fn required(tokens: Arc<TokenService>, clock: Arc<dyn Clock>) -> Self {
        Self {
            tokens,
            clock,
            required: true,
        }
    }

    fn check(&self, metadata: &MetadataMap) -> Bearer {
        match parse_authorization(metadata) {
            Ok(token) => match self.tokens.verify(token, self.clock.now()) {
                Ok(verified) => Bearer::Verified(verified),
                Err(Error::TokenExpired) => Bearer::Expired,
                Err(_) => Bearer::Invalid,
            },
            Err(outcome) => outcome,
        }
    }
}

impl Interceptor for BearerCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let outcome = self.check(request.metadata());
        if self.required
            && let Err(e) = outcome.into_result()
        {
            return Err(e.into());
        }
        request.extensions_mut().insert(outcome);
        Ok(request)
    }
}

/// `Bearer <token>`, the scheme case-insensitive (RFC 9110). No header, or
/// the scheme with nothing after it, is a missing token; anything else that
/// is not that shape is an invalid one.
fn parse_authorization(metadata: &MetadataMap) -> Result<&str, Bearer> {
    let Some(value) = metadata.get("authorization") else {
        return Err(Bearer::Missing);
    };
    let value = value.to_str().map_err(|_| Bearer::Invalid)?.trim();
    if value.is_empty() {
        return Err(Bearer::Missing);
    }
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Bearer::Invalid);
    }
    match rest.trim() {
        "" => Err(Bearer::Missing),
        token if token.contains([' ', '\t']) => Err(Bearer::Invalid),
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Option<&str>) -> Result<String, Bearer> {
        let mut metadata = MetadataMap::new();
        if let Some(v) = value {
            metadata.insert("authorization", v.parse().unwrap());
        }
        parse_authorization(&metadata).map(str::to_owned)
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "  Bearer   abc  "] {
            assert_eq!(parse(Some(header)), Ok("abc".to_owned()), "{header}");
        }
    }

    #[test]
    fn no_header_or_no_token_is_missing() {
        assert_eq!(parse(None), Err(Bearer::Missing));
        assert_eq!(parse(Some("Bearer")), Err(Bearer::Missing));
        assert_eq!(parse(Some("Bearer   ")), Err(Bearer::Missing));
    }

    #[test]
    fn another_shape_is_invalid() {
        for header in ["Basic dXNlcjpwYXNz", "abc", "Token abc", "Bearer a b"] {
            assert_eq!(parse(Some(header)), Err(Bearer::Invalid), "{header}");
        }
    }
}
