//! Recorded EC2 answers for the SDK backend: one replayed exchange, and the SDK configuration
//! (region, static credentials) its HTTP client goes into. Shared by the recorded-answer tests,
//! the fuzzing property tests (src/ec2/aws/fuzz_tests.rs) and the fuzz crate, which include this
//! file by path; so it uses nothing but the SDK crates.

use aws_sdk_ec2::config::{BehaviorVersion, Builder as ConfigBuilder, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;

/// Any request, answered with `status` and the XML `body`.
pub fn answer(status: u16, body: impl Into<SdkBody>) -> ReplayEvent {
    let request = http::Request::builder()
        .uri("https://ec2.us-east-1.amazonaws.com/")
        .body(SdkBody::empty())
        .expect("a request");
    let response = http::Response::builder()
        .status(status)
        .header("content-type", "text/xml;charset=UTF-8")
        .body(body.into())
        .expect("a response");
    ReplayEvent::new(request, response)
}

/// Region and credentials; the caller adds the replaying HTTP client.
pub fn sdk_config() -> ConfigBuilder {
    ConfigBuilder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "test",
        ))
}

/// An SDK configuration whose every request gets `status` and `body` (once: a second request
/// finds no answer).
pub fn answering(status: u16, body: impl Into<SdkBody>) -> ConfigBuilder {
    sdk_config().http_client(StaticReplayClient::new(vec![answer(status, body)]))
}
