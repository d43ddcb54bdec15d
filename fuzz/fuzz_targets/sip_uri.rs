//! The URI and header-field grammar: any text either fails to parse or parses to a value whose
//! printed form parses back to the same value; the rsip form of a URI never panics.
#![no_main]

use dialtone_sip_core::fields::{NameAddr, Via};
use dialtone_sip_core::uri::Uri;
use libfuzzer_sys::fuzz_target;

fn printed<T: ToString>(list: &[T]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(uri) = Uri::parse(text) {
        assert_eq!(Uri::parse(&uri.to_string()).as_ref(), Some(&uri));
        let _ = rsip::Uri::from(&uri).to_string();
    }
    if let Some(list) = NameAddr::parse_list(text) {
        assert_eq!(NameAddr::parse_list(&printed(&list)), Some(list));
    }
    if let Some(vias) = Via::parse_list(text) {
        assert_eq!(Via::parse_list(&printed(&vias)), Some(vias));
    }
});
