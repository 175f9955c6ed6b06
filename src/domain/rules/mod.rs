//! The rules of the contract, as pure functions: no I/O, no clock (`now`
//! comes in), no database. The operations in `accounts/` read what a rule
//! needs, ask the rule, and write what it decided; the unit tests here name
//! each rule and break when it does.

pub mod accounts;
pub mod email;
pub mod keys;
pub mod lockout;
pub mod orgs;
pub mod sessions;
