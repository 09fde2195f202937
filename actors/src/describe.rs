//! [`DescribeMessage`]: how an actor's message names itself in hang and crash reports.

use bulwark_core::HandledMessage;

/// A message that describes itself for incident reports; an actor marks itself busy with
/// `liveness.busy_with(message.describe())`, so a report names what it was handling.
pub trait DescribeMessage {
    /// Returns the message's type and a one-line summary.
    fn describe(&self) -> HandledMessage;
}

#[cfg(feature = "chaos")]
impl DescribeMessage for crate::Fault {
    fn describe(&self) -> HandledMessage {
        HandledMessage::new("Fault", format!("game-day fault: {self:?}"))
    }
}
