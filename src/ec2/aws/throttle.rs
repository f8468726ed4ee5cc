//! Counting throttled attempts inside the SDK: the SDK retries throttled describes on its own,
//! and the client sees only the final result. An interceptor reads the EC2 error code of every
//! attempt and reports `RequestLimitExceeded` to the client's sink (which counts it and lowers
//! the bucket's rate).

use std::fmt;
use std::sync::{Arc, RwLock};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::{
    assign_private_ip_addresses::AssignPrivateIpAddressesError,
    describe_instance_types::DescribeInstanceTypesError,
    describe_instances::DescribeInstancesError, describe_subnets::DescribeSubnetsError,
    unassign_private_ip_addresses::UnassignPrivateIpAddressesError,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    Error, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::ec2::{Operation, ThrottleSink};

const THROTTLED: &str = "RequestLimitExceeded";

/// Reports every throttled attempt. The sink is set when the client is built, after the SDK
/// client (hence the shared slot).
#[derive(Clone, Default)]
pub(super) struct ThrottleInterceptor {
    sink: Arc<RwLock<Option<ThrottleSink>>>,
}

impl fmt::Debug for ThrottleInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ThrottleInterceptor")
    }
}

impl ThrottleInterceptor {
    pub(super) fn set_sink(&self, sink: ThrottleSink) {
        let mut slot = self.sink.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(sink);
    }

    fn report(&self, op: Operation) {
        let slot = self.sink.read().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = slot.as_ref() {
            sink(op);
        }
    }
}

impl Intercept for ThrottleInterceptor {
    fn name(&self) -> &'static str {
        "winipam-throttle-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Err(err)) = context.output_or_error() else {
            return Ok(());
        };
        let code = err.as_operation_error().and_then(error_code);
        if code == Some(THROTTLED) {
            let op = cfg
                .load::<Metadata>()
                .and_then(|m| Operation::from_name(m.name()));
            if let Some(op) = op {
                self.report(op);
            }
        }
        Ok(())
    }
}

/// The EC2 error code of a type-erased operation error (one of our five operations).
fn error_code(err: &Error) -> Option<&str> {
    if let Some(e) = err.downcast_ref::<DescribeInstancesError>() {
        return e.code();
    }
    if let Some(e) = err.downcast_ref::<DescribeSubnetsError>() {
        return e.code();
    }
    if let Some(e) = err.downcast_ref::<DescribeInstanceTypesError>() {
        return e.code();
    }
    if let Some(e) = err.downcast_ref::<AssignPrivateIpAddressesError>() {
        return e.code();
    }
    if let Some(e) = err.downcast_ref::<UnassignPrivateIpAddressesError>() {
        return e.code();
    }
    None
}
