//! `wire.rs` mirrors generated messages by hand. A field added to the contract but
//! not there would vanish from every response of the server, with no other test
//! failing (they build their messages with `..Default::default()`). Here every field
//! the descriptor set declares is set, and must come back through the mirror.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, encode_key, encode_varint, skip_field};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

use super::{
    BatchGetContactsResponse, Contact, ContactChange, GetContactByEmailResponse,
    ListContactsResponse, UpsertContactResponse,
};
use crate::api::pb;

/// Every message of the descriptor set build.rs emits, by full name
/// (`.kraiter.contacts.v1.Contact`), nested ones (map entries) included.
fn descriptors() -> HashMap<String, DescriptorProto> {
    fn add(scope: &str, message: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            add(&name, nested, out);
        }
        out.insert(name, message.clone());
    }
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            add(&format!(".{}", file.package()), message, &mut out);
        }
    }
    out
}

/// The encoding of message `name` with every field set to a value that is not its
/// default, read from the descriptor alone, so a field added to the contract is
/// set here without anyone touching this test. Messages of the contract are filled
/// the same way; others (Struct, Timestamp) are present and empty. Of a oneof,
/// member number `pick` only (the last if it has fewer), since setting one clears
/// the others. Returns the field numbers it set, too.
fn populated(
    messages: &HashMap<String, DescriptorProto>,
    name: &str,
    pick: usize,
    depth: usize,
) -> (Vec<u8>, BTreeSet<u32>) {
    let message = messages
        .get(name)
        .unwrap_or_else(|| panic!("no descriptor of {name}"));
    let oneof_of =
        |field: &FieldDescriptorProto| field.oneof_index.filter(|_| !field.proto3_optional());
    let mut out = Vec::new();
    let mut set = BTreeSet::new();
    for (i, field) in message.field.iter().enumerate() {
        if let Some(oneof) = oneof_of(field) {
            let members = message.field.iter().filter(|f| oneof_of(f) == Some(oneof));
            let position = message.field[..i]
                .iter()
                .filter(|f| oneof_of(f) == Some(oneof))
                .count();
            if position != pick.min(members.count() - 1) {
                continue;
            }
        }
        let tag = u32::try_from(field.number()).expect("field numbers are positive");
        set.insert(tag);
        let mut delimited = |body: &[u8]| {
            encode_key(tag, WireType::LengthDelimited, &mut out);
            encode_varint(body.len() as u64, &mut out);
            out.extend_from_slice(body);
        };
        match field.r#type() {
            Type::Message if field.type_name().starts_with(".kraiter.") && depth < 4 => {
                delimited(&populated(messages, field.type_name(), pick, depth + 1).0)
            }
            Type::Message => delimited(&[]),
            Type::String | Type::Bytes => delimited(b"x"),
            Type::Bool | Type::Enum | Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                encode_key(tag, WireType::Varint, &mut out);
                encode_varint(1, &mut out);
            }
            Type::Sint32 | Type::Sint64 => {
                encode_key(tag, WireType::Varint, &mut out);
                encode_varint(2, &mut out); // zigzag for 1
            }
            Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                encode_key(tag, WireType::SixtyFourBit, &mut out);
                out.extend_from_slice(&1.0f64.to_le_bytes());
            }
            Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                encode_key(tag, WireType::ThirtyTwoBit, &mut out);
                out.extend_from_slice(&1.0f32.to_le_bytes());
            }
            Type::Group => panic!("{name}: proto3 has no groups"),
        }
    }
    (out, set)
}

/// The field numbers present in an encoded message.
fn field_numbers(mut bytes: &[u8]) -> BTreeSet<u32> {
    let mut numbers = BTreeSet::new();
    while !bytes.is_empty() {
        let (tag, wire_type) = decode_key(&mut bytes).expect("a field key");
        skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).expect("a field");
        numbers.insert(tag);
    }
    numbers
}

/// `W` (`wire::{name}`) carries every field of the generated `G`: a message
/// with all fields set, decoded as `W` and encoded again, is the generated one
/// byte for byte. Once for each member of the largest oneof.
fn assert_mirrors<G, W>(messages: &HashMap<String, DescriptorProto>, name: &str)
where
    G: Message + Default + PartialEq + std::fmt::Debug,
    W: Message + Default,
{
    let full = format!(".kraiter.contacts.v1.{name}");
    let contract = messages.iter().filter(|(n, _)| n.starts_with(".kraiter."));
    let widest = contract.flat_map(|(_, m)| {
        (0..m.oneof_decl.len() as i32)
            .map(|o| m.field.iter().filter(|f| f.oneof_index == Some(o)).count())
    });
    for pick in 0..widest.max().unwrap_or(1).max(1) {
        assert_mirrors_once::<G, W>(messages, name, &full, pick);
    }
}

fn assert_mirrors_once<G, W>(
    messages: &HashMap<String, DescriptorProto>,
    name: &str,
    full: &str,
    pick: usize,
) where
    G: Message + Default + PartialEq + std::fmt::Debug,
    W: Message + Default,
{
    let (bytes, set) = populated(messages, full, pick, 0);
    let generated = G::decode(bytes.as_slice()).expect("decodes as the generated type");
    let generated = generated.encode_to_vec();
    assert_eq!(
        field_numbers(&generated),
        set,
        "{name}: every field set, none default"
    );
    let wire = W::decode(bytes.as_slice())
        .unwrap_or_else(|err| panic!("wire::{name} cannot read the contract's {name}: {err}"));
    let wire = wire.encode_to_vec();
    let carried = field_numbers(&wire);
    let missing: Vec<String> = messages[full]
        .field
        .iter()
        .map(|f| (f, f.number() as u32))
        .filter(|(_, number)| set.contains(number) && !carried.contains(number))
        .map(|(f, number)| format!("{} = {number}", f.name()))
        .collect();
    assert!(
        missing.is_empty(),
        "wire::{name} in src/api/wire.rs drops fields of the contract's {name}: {missing:?}"
    );
    assert_eq!(
        G::decode(wire.as_slice()).expect("decodes as the generated type"),
        G::decode(generated.as_slice()).expect("decodes as the generated type"),
        "wire::{name} changes a field of the contract's {name}"
    );
    assert_eq!(
        wire, generated,
        "wire::{name} encodes differently from {name}"
    );
}

/// The messages build.rs swaps for this module's in the ContactsService server it
/// generates: each `crate::api::wire::X` in that code.
fn mirrored() -> BTreeSet<String> {
    const SERVER: &str = include_str!(concat!(env!("OUT_DIR"), "/server/kraiter.contacts.v1.rs"));
    SERVER
        .split("crate::api::wire::")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        })
        .collect()
}

/// Adding a field to `contact.proto` (or to a response that carries a Contact)
/// without adding it to `wire.rs` fails here.
#[test]
fn every_mirrored_message_carries_every_field_of_the_contract() {
    let messages = descriptors();
    let mirrored = mirrored();
    assert!(!mirrored.is_empty(), "the generated server uses `wire.rs`");
    for name in &mirrored {
        match name.as_str() {
            "Contact" => assert_mirrors::<pb::Contact, Contact>(&messages, name),
            "GetContactByEmailResponse" => assert_mirrors::<
                pb::GetContactByEmailResponse,
                GetContactByEmailResponse,
            >(&messages, name),
            "ListContactsResponse" => {
                assert_mirrors::<pb::ListContactsResponse, ListContactsResponse>(&messages, name)
            }
            "UpsertContactResponse" => {
                assert_mirrors::<pb::UpsertContactResponse, UpsertContactResponse>(&messages, name)
            }
            "BatchGetContactsResponse" => assert_mirrors::<
                pb::BatchGetContactsResponse,
                BatchGetContactsResponse,
            >(&messages, name),
            "ContactChange" => assert_mirrors::<pb::ContactChange, ContactChange>(&messages, name),
            other => panic!("build.rs mirrors `{other}`: check it here too"),
        }
    }
}
