//! EndDevice function set: finding this device in the EndDeviceList, in-band
//! registration, the Registration PIN check and the csipaus ConnectionPoint. Pure; the
//! driver does the requests.

use crate::sep2::{ConnectionPoint, EndDevice, Registration};

/// This device in a page of EndDevices: by LFDI, else by SFDI (servers that list the
/// LFDI in another case or not at all still carry the SFDI).
pub fn find_own<'a>(devices: &'a [EndDevice], lfdi: &str, sfdi: u64) -> Option<&'a EndDevice> {
    devices
        .iter()
        .find(|device| device.is_lfdi(lfdi))
        .or_else(|| {
            devices
                .iter()
                .find(|device| device.lfdi.is_none() && device.sfdi == sfdi)
        })
}

/// The EndDevice csipd POSTs for in-band registration.
pub fn registration_request(lfdi: &str, sfdi: u64, now_s: i64) -> EndDevice {
    EndDevice::for_registration(lfdi, sfdi, now_s)
}

/// Result of comparing the server's Registration with the configured PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// No PIN configured, or the server offers no Registration: nothing to check.
    NotChecked,
    Matches,
    /// The server's PIN differs: do not act on this server.
    Mismatch {
        server: u32,
        configured: u32,
    },
}

pub fn check_pin(configured: Option<u32>, registration: Option<&Registration>) -> PinCheck {
    match (configured, registration) {
        (Some(configured), Some(registration)) if registration.pin == configured => {
            PinCheck::Matches
        }
        (Some(configured), Some(registration)) => PinCheck::Mismatch {
            server: registration.pin,
            configured,
        },
        _ => PinCheck::NotChecked,
    }
}

/// The ConnectionPoint csipd PUTs when the server links one and an NMI is configured.
pub fn connection_point(nmi: &str) -> ConnectionPoint {
    ConnectionPoint {
        href: None,
        connection_point_id: nmi.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(lfdi: Option<&str>, sfdi: u64) -> EndDevice {
        EndDevice {
            lfdi: lfdi.map(str::to_string),
            sfdi,
            ..EndDevice::default()
        }
    }

    #[test]
    fn finds_own_device_by_lfdi_then_sfdi() {
        let lfdi = "3E4F45AB31EDFE5B67E343E5E4562E3100000000";
        let list = vec![
            device(Some("00"), 1),
            device(Some(&lfdi.to_lowercase()), 16726121139),
        ];
        assert_eq!(find_own(&list, lfdi, 0).map(|d| d.sfdi), Some(16726121139));
        let list = vec![device(Some("00"), 1), device(None, 16726121139)];
        assert_eq!(
            find_own(&list, lfdi, 16726121139).map(|d| d.sfdi),
            Some(16726121139)
        );
        assert!(find_own(&list, lfdi, 5).is_none());
    }

    #[test]
    fn pin_check() {
        let registration = Registration {
            pin: 111115,
            ..Registration::default()
        };
        assert_eq!(check_pin(None, Some(&registration)), PinCheck::NotChecked);
        assert_eq!(check_pin(Some(111115), None), PinCheck::NotChecked);
        assert_eq!(
            check_pin(Some(111115), Some(&registration)),
            PinCheck::Matches
        );
        assert_eq!(
            check_pin(Some(123455), Some(&registration)),
            PinCheck::Mismatch {
                server: 111115,
                configured: 123455
            }
        );
    }

    #[test]
    fn registration_request_uppercases_lfdi() {
        let edev = registration_request("abcdef", 42, 1000);
        assert_eq!(edev.lfdi.as_deref(), Some("ABCDEF"));
        assert_eq!((edev.sfdi, edev.changed_time), (42, 1000));
    }
}
