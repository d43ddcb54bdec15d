//! # dialtone-proto — the gRPC contract
//!
//! The messages, service servers and clients generated from `proto/dialtone/v1` (package
//! `dialtone.v1`): the control-plane services (`TrunkService`, `NumberService`,
//! `AgentService`, `ProviderService`, `OrganizationService`, `CallService`) that `dialtone-control` serves, and the
//! `AgentBridge` stream the engine opens to external brains. [`FILE_DESCRIPTOR_SET`] feeds server reflection;
//! [`json`] converts free-form JSON to and from the well-known `Struct` and `Value`; [`convert`]
//! maps the messages to and from the model's types.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("dialtone.v1");

pub mod convert;
pub mod json;

/// The encoded file descriptor set of the protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("dialtone_v1_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message;

    fn upper_snake(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    /// The protos keep the usual lint rules (buf's DEFAULT set in spirit): a versioned package
    /// matching the directory, `…Service` names, one `<Rpc>Request`/`<Rpc>Response` pair per
    /// RPC, enum values prefixed with the enum's name and an `_UNSPECIFIED` zero, and a comment
    /// on every service, RPC, message and field.
    #[test]
    fn the_protos_follow_the_conventions() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let ours: Vec<_> = set
            .file
            .iter()
            .filter(|f| f.package() == "dialtone.v1")
            .collect();
        assert_eq!(ours.len(), 7);
        for file in ours {
            assert!(file.name().starts_with("dialtone/v1/"), "{}", file.name());
            let info = file.source_code_info.as_ref().expect("source info kept");
            let commented = |path: &[i32]| {
                info.location
                    .iter()
                    .any(|l| l.path == path && !l.leading_comments().trim().is_empty())
            };
            for (si, service) in file.service.iter().enumerate() {
                assert!(service.name().ends_with("Service"), "{}", service.name());
                assert!(
                    commented(&[6, si as i32]),
                    "{} needs a comment",
                    service.name()
                );
                for (mi, rpc) in service.method.iter().enumerate() {
                    assert_eq!(
                        rpc.input_type(),
                        format!(".dialtone.v1.{}Request", rpc.name())
                    );
                    assert_eq!(
                        rpc.output_type(),
                        format!(".dialtone.v1.{}Response", rpc.name())
                    );
                    assert!(
                        commented(&[6, si as i32, 2, mi as i32]),
                        "{} needs a comment",
                        rpc.name()
                    );
                }
            }
            for (ei, e) in file.enum_type.iter().enumerate() {
                let prefix = upper_snake(e.name());
                assert_eq!(e.value[0].number(), 0);
                assert_eq!(e.value[0].name(), format!("{prefix}_UNSPECIFIED"));
                for v in &e.value {
                    assert!(v.name().starts_with(&format!("{prefix}_")), "{}", v.name());
                }
                assert!(commented(&[5, ei as i32]), "{} needs a comment", e.name());
            }
            for (mi, m) in file.message_type.iter().enumerate() {
                assert!(commented(&[4, mi as i32]), "{} needs a comment", m.name());
                for (fi, f) in m.field.iter().enumerate() {
                    assert!(
                        commented(&[4, mi as i32, 2, fi as i32]),
                        "{}.{} needs a comment",
                        m.name(),
                        f.name()
                    );
                    assert_eq!(f.name(), f.name().to_lowercase(), "snake_case fields");
                }
            }
        }
    }
}
