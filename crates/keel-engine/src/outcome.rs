//! What an attempt must produce ([`Mode`]), what it returned ([`Reply`]) and
//! what the chain hands its caller ([`Success`]).

use std::time::Duration;

use crate::call::FullAnswer;
use crate::routing::Timing;
use crate::stream::OpenStream;
use crate::upstream::Answer;

/// What an attempt must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A whole answer.
    Full,
    /// An open stream with its first token read.
    Stream,
}

impl Mode {
    /// What an attempt's latency measures in this mode.
    pub(crate) fn timing(self) -> Timing {
        match self {
            Mode::Full => Timing::Answer,
            Mode::Stream => Timing::FirstToken,
        }
    }

    /// What an attempt waits for, in attempt records.
    pub(crate) fn answered(self) -> &'static str {
        match self {
            Mode::Full => "answered",
            Mode::Stream => "sent its first token",
        }
    }
}

/// What an attempt returned, before it was judged.
pub(crate) enum Reply {
    /// A whole answer (`Mode::Full`).
    Full(Answer),
    /// A stream with its first token read (`Mode::Stream`); boxed, as it
    /// moves through every stage to the pump.
    Stream(Box<OpenStream>),
}

/// What the chain produced: the answer, or the stream to pump.
pub(crate) enum Success {
    Full(FullAnswer),
    Stream(Box<OpenStream>),
}

/// The answer (or open stream) the chain returns, and where it came from.
pub(crate) struct Won {
    pub success: Success,
    /// The deployment's index and its position in the plan.
    pub di: usize,
    pub pos: usize,
    pub latency: Duration,
}
