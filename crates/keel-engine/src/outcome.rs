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
    /// A whole JSON answer taken as it is once it reads right (embeddings,
    /// token counts): no content to judge, nothing to follow up.
    Plain,
}

impl Mode {
    /// What an attempt's latency measures in this mode.
    pub(crate) fn timing(self) -> Timing {
        match self {
            Mode::Full | Mode::Plain => Timing::Answer,
            Mode::Stream => Timing::FirstToken,
        }
    }

    /// What an attempt waits for, in attempt records.
    pub(crate) fn answered(self) -> &'static str {
        match self {
            Mode::Full | Mode::Plain => "answered",
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
    /// A plain answer (`Mode::Plain`).
    Plain(PlainAnswer),
    /// A whole answer asked as a stream that broke after its first token
    /// (`Mode::Full`, see [`crate::assemble`]): a failure whose text so
    /// far the next attempt continues.
    Cut(Box<Cut>),
}

/// A whole answer cut mid-way.
pub(crate) struct Cut {
    /// Why it broke.
    pub failure: keel_policy::Classification,
    /// The answer's text before the break.
    pub text: String,
    /// When its first token came, after the request was sent.
    pub first_token: Option<Duration>,
}

/// A plain answer (embeddings, a token count): the provider's bytes, read
/// and found right, and what they used.
pub(crate) struct PlainAnswer {
    pub body: bytes::Bytes,
    /// Input tokens the answer used (0 for a token count, which uses none).
    pub input_tokens: u32,
    pub rate_limits: keel_policy::RateLimitHeaders,
}

/// What the chain produced: the answer, or the stream to pump.
pub(crate) enum Success {
    Full(FullAnswer),
    Stream(Box<OpenStream>),
    Plain(PlainAnswer),
}

/// The answer (or open stream) the chain returns, and where it came from.
pub(crate) struct Won {
    pub success: Success,
    /// The deployment's index and its position in the plan.
    pub di: usize,
    pub pos: usize,
    pub latency: Duration,
}
