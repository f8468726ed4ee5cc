//! EC2 error code -> [`Ec2ErrorClass`]. Decided by the code alone: EC2's message texts are for
//! humans and change without notice; the codes are part of the API.

use crate::ipam::Ec2ErrorClass;

/// The codes winipam reacts to (SPEC section 7) and their classes. Anything else is `Other`.
pub const CLASSIFIED_CODES: &[(&str, Ec2ErrorClass)] = &[
    ("RequestLimitExceeded", Ec2ErrorClass::Throttled),
    ("InsufficientCidrBlocks", Ec2ErrorClass::NoCidrBlock),
    (
        "InsufficientFreeAddressesInSubnet",
        Ec2ErrorClass::SubnetFull,
    ),
    ("PrivateIpAddressLimitExceeded", Ec2ErrorClass::EniLimit),
    (
        "InvalidNetworkInterfaceID.NotFound",
        Ec2ErrorClass::NotFound,
    ),
    ("InvalidInstanceID.NotFound", Ec2ErrorClass::NotFound),
];

/// The class of an EC2 error code. `message` is only carried along for unknown codes (it goes
/// into the Warning Event); it never influences the class.
pub fn classify(code: &str, message: &str) -> Ec2ErrorClass {
    CLASSIFIED_CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, class)| class.clone())
        .unwrap_or_else(|| Ec2ErrorClass::Other {
            code: code.to_string(),
            message: message.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::{Ec2Error, Operation};

    #[test]
    fn each_spec_code_has_its_class() {
        let expected = [
            ("RequestLimitExceeded", Ec2ErrorClass::Throttled),
            ("InsufficientCidrBlocks", Ec2ErrorClass::NoCidrBlock),
            (
                "InsufficientFreeAddressesInSubnet",
                Ec2ErrorClass::SubnetFull,
            ),
            ("PrivateIpAddressLimitExceeded", Ec2ErrorClass::EniLimit),
            (
                "InvalidNetworkInterfaceID.NotFound",
                Ec2ErrorClass::NotFound,
            ),
            ("InvalidInstanceID.NotFound", Ec2ErrorClass::NotFound),
        ];
        for (code, class) in expected {
            assert_eq!(classify(code, "whatever the text says"), class, "{code}");
        }
    }

    #[test]
    fn unknown_code_is_other_with_code_and_message() {
        assert_eq!(
            classify("UnauthorizedOperation", "You are not authorized"),
            Ec2ErrorClass::Other {
                code: "UnauthorizedOperation".into(),
                message: "You are not authorized".into()
            }
        );
    }

    #[test]
    fn message_text_never_decides() {
        // A message that names a known code does not make an unknown code known.
        let class = classify("InvalidParameterValue", "RequestLimitExceeded, not found");
        assert_eq!(class.label(), "other");
        // Codes are case-sensitive, as EC2's are.
        assert_eq!(classify("requestlimitexceeded", "").label(), "other");
        // Look-alike codes are not the classified ones.
        assert_eq!(classify("InvalidSubnetID.NotFound", "").label(), "other");
        assert_eq!(
            classify("InvalidNetworkInterfaceID.Malformed", "").label(),
            "other"
        );
    }

    #[test]
    fn no_answer_is_unknown_outcome_only_for_mutating_calls() {
        let assign = Ec2Error::no_answer(Operation::AssignPrivateIpAddresses, "Timeout", "t");
        assert_eq!(assign.class, Ec2ErrorClass::UnknownOutcome);
        assert_eq!(assign.code, None);
        let unassign = Ec2Error::no_answer(Operation::UnassignPrivateIpAddresses, "Transport", "");
        assert_eq!(unassign.class, Ec2ErrorClass::UnknownOutcome);
        let describe = Ec2Error::no_answer(Operation::DescribeInstances, "Timeout", "t");
        assert_eq!(describe.class.label(), "other");
        assert_eq!(describe.code, None);
    }

    #[test]
    fn from_code_keeps_code_and_message() {
        let e = Ec2Error::from_code("InsufficientCidrBlocks", "no /28 left");
        assert_eq!(e.class, Ec2ErrorClass::NoCidrBlock);
        assert_eq!(e.code.as_deref(), Some("InsufficientCidrBlocks"));
        assert_eq!(
            e.to_string(),
            "EC2 error InsufficientCidrBlocks: no /28 left"
        );
    }
}
