//! The load error of the register: every problem found, each naming the
//! entry it is about, so a bad register is fixed in one pass.

use std::error::Error as StdError;
use std::fmt;

/// The cause of a problem, kept for callers that walk error sources.
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// One thing wrong with the register.
#[derive(Debug, thiserror::Error)]
#[error("{entry}: {message}")]
pub struct Problem {
    /// The entry concerned, e.g. `services[UZ-00125]`, `agencies[UZ-GNK]`,
    /// `policies.48-hours`, `register.toml` or `payloads/tax.proto`.
    pub entry: String,
    /// What is wrong, on one line, with the clause it comes from where there is one.
    pub message: String,
    /// The underlying error (I/O, TOML, protobuf), if any; its text is already in `message`.
    #[source]
    pub cause: Option<Cause>,
}

impl Problem {
    /// A problem with no underlying error.
    pub fn new(entry: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            entry: entry.into(),
            message: message.into(),
            cause: None,
        }
    }

    /// A problem caused by another error.
    pub fn caused(entry: impl Into<String>, message: impl Into<String>, cause: Cause) -> Problem {
        Problem {
            entry: entry.into(),
            message: message.into(),
            cause: Some(cause),
        }
    }
}

/// The register failed to load; holds all the problems found, displayed one per line.
#[derive(Debug)]
pub struct RegisterError {
    problems: Vec<Problem>,
}

impl RegisterError {
    pub(crate) fn new(problems: Vec<Problem>) -> RegisterError {
        RegisterError { problems }
    }

    /// Every problem found, in the order of the register file.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Takes the problems out.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// The causes are kept per problem ([`Problem::cause`]), not chained here:
/// a chain has one source, a register has many problems.
impl StdError for RegisterError {}
