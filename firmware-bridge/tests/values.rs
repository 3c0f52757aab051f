//! Value conversion (vectors.md §7) and profile loading on the three real
//! profiles.
#![cfg(feature = "std")] // the helpers load profiles

mod common;

use common::{hex, profile};
use firmware_bridge::{ConvertError, DataType};

#[test]
fn the_decoding_vectors_convert_to_the_expected_strings() {
    use DataType::*;
    let cases = [
        (Boolean, "00", "false"),
        (Boolean, "01", "true"),
        (Sint8, "04", "4"),
        (Sint16, "01 00", "1"),
        (Sint16, "ff ff", "-1"),
        (Sint16, "00 80", "-32768"),
        (Sint32, "00 f1 53 65", "1700000000"),
        (Sint32, "80 3a 09 00", "604800"),
        (Sint64, "45 01 00 00 00 00 00 00", "325"),
        (Sint64, "ff ff ff ff ff ff ff ff", "-1"),
        (Q15_16, "00 80 01 00", "1.5"),
        (Q15_16, "00 00 ff ff", "-1.0"),
        (Q15_16, "00 80 15 00", "21.5"),
        (Utf8s, "4d 79 57 69 46 69", "MyWiFi"),
        (Bytes, "01 23 45 67 89 ab cd ef", "0123456789abcdef"),
        (Uint16, "ff ff", "65535"),
        (Uint64, "ff ff ff ff ff ff ff ff", "18446744073709551615"),
    ];
    for (ty, bytes, text) in cases {
        assert_eq!(ty.to_display(&hex(bytes)), text, "{ty} {bytes}");
        assert_eq!(ty.parse(text, 64).unwrap(), hex(bytes), "{ty} {text}");
    }
}

#[test]
fn values_of_other_lengths_than_declared_are_extended_narrowed_or_shown_as_hex() {
    assert_eq!(
        DataType::Sint16.to_display(&hex("01 00 00 00")),
        "1",
        "vector M23"
    );
    assert_eq!(DataType::Sint16.to_display(&hex("ff ff ff ff")), "-1");
    assert_eq!(
        DataType::Sint16.to_display(&hex("00 80 00 00")),
        "0x00800000",
        "does not fit: hex"
    );
    assert_eq!(
        DataType::Sint32.to_display(&hex("ff")),
        "-1",
        "short signed: sign-extended"
    );
    assert_eq!(
        DataType::Uint32.to_display(&hex("ff")),
        "255",
        "short unsigned: zero-extended"
    );
    assert_eq!(DataType::Boolean.to_display(&hex("01 00")), "true");
    assert_eq!(
        DataType::Utf8s.to_display(b"ab\0\0"),
        "ab",
        "NUL padding dropped"
    );
    for ty in [
        DataType::Boolean,
        DataType::Sint64,
        DataType::Q15_16,
        DataType::Utf8s,
        DataType::Bytes,
    ] {
        assert_eq!(ty.to_display(&[]), "", "vector A40: empty");
    }
}

#[test]
fn every_type_round_trips_through_its_string_form() {
    let samples: [(DataType, &[&str]); 12] = [
        (DataType::Boolean, &["true", "false"]),
        (DataType::Sint8, &["-128", "0", "127"]),
        (DataType::Sint16, &["-32768", "32767"]),
        (DataType::Sint32, &["-2147483648", "2147483647"]),
        (
            DataType::Sint64,
            &["-9223372036854775808", "9223372036854775807"],
        ),
        (DataType::Uint8, &["0", "255"]),
        (DataType::Uint16, &["65535"]),
        (DataType::Uint32, &["4294967295"]),
        (DataType::Uint64, &["18446744073709551615"]),
        (
            DataType::Q15_16,
            &[
                "-32768.0",
                "32767.9999847412109375",
                "0.0000152587890625",
                "21.5",
            ],
        ),
        (
            DataType::Utf8s,
            &["", " ", "0,3,test-reboot-reason", "grüße"],
        ),
        (
            DataType::Bytes,
            &["", "01030000", "fa000000180018000c00a00f"],
        ),
    ];
    for (ty, texts) in samples {
        for text in texts {
            let bytes = ty.parse(text, 100).unwrap();
            assert_eq!(&ty.to_display(&bytes), text, "{ty}");
            assert_eq!(ty.as_str().parse::<DataType>(), Ok(ty));
        }
    }
}

#[test]
fn bad_strings_are_refused_with_a_reason() {
    assert_eq!(
        DataType::Sint8.parse("128", 1),
        Err(ConvertError::OutOfRange)
    );
    assert_eq!(
        DataType::Uint8.parse("-1", 1),
        Err(ConvertError::InvalidNumber)
    );
    assert_eq!(
        DataType::Boolean.parse("yes", 1),
        Err(ConvertError::InvalidBool)
    );
    assert_eq!(
        DataType::Bytes.parse("abc", 4),
        Err(ConvertError::InvalidHex)
    );
    assert_eq!(
        DataType::Bytes.parse("0102030405", 4),
        Err(ConvertError::TooLong { len: 5, max: 4 })
    );
    assert_eq!(
        DataType::Q15_16.parse("40000", 4),
        Err(ConvertError::OutOfRange)
    );
    assert_eq!(
        DataType::Q15_16.parse("1.2.3", 4),
        Err(ConvertError::InvalidNumber)
    );
    assert_eq!(
        DataType::Bytes.parse("FA00", 4).unwrap(),
        hex("fa 00"),
        "profile defaults are upper case"
    );
}

#[test]
fn all_three_real_profiles_load_with_types_lengths_operations_and_defaults() {
    for (name, count) in [
        ("afBlink_Modulo-2_UART", 32),
        ("afBlink_Plumo-2D_UART", 29),
        ("full_api_example_Plumo-2D_UART", 30),
    ] {
        let p = profile(name);
        assert_eq!(p.attributes.len(), count, "{name}");
        let table = p.to_table();
        let uart = table.def(65000).unwrap();
        assert_eq!(
            (uart.data_type, uart.length, uart.default.clone()),
            (DataType::Bytes, 4, Some(hex("01 03 00 00")))
        );
        assert!(uart.operations.read && !uart.operations.write);
        let led = table.def(1024).unwrap();
        assert_eq!(
            (
                led.semantic_type.as_str(),
                led.data_type,
                led.default.clone()
            ),
            ("Modulo LED", DataType::Sint16, Some(vec![0, 0]))
        );
        assert!(led.operations.write);
        assert_eq!(table.def(65004).unwrap().default, Some(b" ".to_vec()));
        assert_eq!(table.def(65002).unwrap().default, Some(hex("80 3a 09 00")));
        assert_eq!(table.def(1030).unwrap().default, None);
        assert!(table.def(65009).unwrap().operations.pass_through);
    }
    let full = profile("full_api_example_Plumo-2D_UART").to_table();
    assert_eq!(full.def(1).unwrap().default, Some(vec![4]));
    assert_eq!(
        profile("afBlink_Plumo-2D_UART")
            .to_table()
            .def(1)
            .unwrap()
            .default,
        Some(vec![0])
    );
}

#[test]
fn a_profile_with_an_unknown_type_is_refused() {
    let json = r#"{"services":[{"id":1,"attributes":[{"id":1,"dataType":"FLOAT","length":4}]}]}"#;
    let err = firmware_bridge::Profile::from_json(json).unwrap_err();
    assert!(matches!(
        err,
        firmware_bridge::ProfileError::UnknownDataType { attr_id: 1, .. }
    ));
}
