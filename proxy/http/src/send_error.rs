//! Why an upstream exchange produced no response, in the terms retries
//! need: whether the upstream can have seen the request.

use hyper::client::conn::TrySendError;
use outrigger_transport::connect::ConnectError;

use crate::body::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request was never written: the upstream cannot have seen it.
    #[error("{0}")]
    NotSent(BoxError),
    /// The exchange broke after the request may have reached the upstream.
    #[error("{0}")]
    Failed(BoxError),
}

impl SendError {
    /// What a failed `try_send_request` means: a request hyper gave back
    /// was never written; one it kept may have reached the upstream.
    pub fn after_try_send<T>(mut err: TrySendError<T>) -> SendError {
        match err.take_message() {
            Some(_) => SendError::NotSent(err.into_error().into()),
            None => SendError::Failed(err.into_error().into()),
        }
    }
}
