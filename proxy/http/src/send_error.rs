//! Why an upstream exchange produced no response, in the terms retries
//! need: whether the upstream can have seen the request.

use outrigger_transport::connect::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request was never written: the upstream cannot have seen it.
    #[error("{0}")]
    NotSent(hyper::Error),
    /// The exchange broke after the request may have reached the upstream.
    #[error("{0}")]
    Failed(hyper::Error),
}
