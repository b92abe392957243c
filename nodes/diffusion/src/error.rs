//! The crate's error: a message for invalid configs and arguments, or a
//! libtorch error. No SDK dependency: plugins turn it into their `NodeError`
//! through `String` (`impl From<Error> for String`; the SDK's `NodeError`
//! has `From<String>`), e.g. `.map_err(String::from)?`.
use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// An invalid config value or argument, with a message for the user.
    Invalid(String),
    /// A libtorch operation failed.
    Torch(tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) => f.write_str(m),
            // The same wording as the SDK's `NodeError` from a `TchError`.
            Error::Torch(e) => write!(f, "libtorch: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Invalid(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Invalid(m.to_string())
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}
