//! Metering Mirror function set: the site and DER MirrorUsagePoints csipd creates, the
//! ReadingType of each channel, and the MirrorMeterReading bodies that carry one
//! interval's average. Pure; averaging itself is in `averaging`.

use crate::sep2::{
    self, DateTimeInterval, MirrorMeterReading, MirrorUsagePoint, Reading, ReadingType,
};

use super::averaging::{Channel, IntervalAverages, Phase, Quantity};

/// Which usage point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MupRole {
    /// The connection point (premises aggregation point).
    Site,
    /// The DER fleet behind the meter.
    Der,
}

impl MupRole {
    pub const ALL: [MupRole; 2] = [MupRole::Site, MupRole::Der];

    pub fn name(self) -> &'static str {
        match self {
            MupRole::Site => "site",
            MupRole::Der => "der",
        }
    }

    /// RoleFlagsType: bit 0 isMirror, 1 isPremisesAggregationPoint, 3 isDER,
    /// 6 isSubmeter (the DER meter is a submeter behind the site meter).
    pub fn role_flags(self) -> u16 {
        match self {
            MupRole::Site => 0x0003,
            MupRole::Der => 0x0049,
        }
    }

    /// FlowDirectionType of power readings: 1 forward (site: positive = import),
    /// 19 reverse (DER: positive = generation towards the grid).
    fn flow_direction(self) -> u8 {
        match self {
            MupRole::Site => 1,
            MupRole::Der => 19,
        }
    }
}

/// Short stable name of a channel, used in mRIDs and descriptions.
pub fn channel_name(channel: Channel) -> &'static str {
    use Phase::*;
    use Quantity::*;
    match (channel.quantity, channel.phase) {
        (ActivePowerW, Total) => "w",
        (ActivePowerW, A) => "w-a",
        (ActivePowerW, B) => "w-b",
        (ActivePowerW, C) => "w-c",
        (ReactivePowerVar, Total) => "var",
        (ReactivePowerVar, A) => "var-a",
        (ReactivePowerVar, B) => "var-b",
        (ReactivePowerVar, C) => "var-c",
        (VoltageV, Total) => "v",
        (VoltageV, A) => "v-a",
        (VoltageV, B) => "v-b",
        (VoltageV, C) => "v-c",
        (FrequencyHz, _) => "hz",
    }
}

/// Power of ten the value of a channel is sent with (0.1 V and 0.01 Hz resolution).
fn multiplier(quantity: Quantity) -> i8 {
    match quantity {
        Quantity::ActivePowerW | Quantity::ReactivePowerVar => 0,
        Quantity::VoltageV => -1,
        Quantity::FrequencyHz => -2,
    }
}

/// ReadingType of `channel` on usage point `role`, averaged over `interval_s`.
pub fn reading_type(role: MupRole, channel: Channel, interval_s: u32) -> ReadingType {
    // PhaseCode: power on a phase is A 128 / B 64 / C 32; voltage is line to
    // neutral: AN 129 / BN 65 / CN 33; 0 = not applicable (totals, frequency).
    let phase = match (channel.quantity, channel.phase) {
        (_, Phase::Total) | (Quantity::FrequencyHz, _) => 0,
        (Quantity::VoltageV, Phase::A) => 129,
        (Quantity::VoltageV, Phase::B) => 65,
        (Quantity::VoltageV, Phase::C) => 33,
        (_, Phase::A) => 128,
        (_, Phase::B) => 64,
        (_, Phase::C) => 32,
    };
    let (uom, kind, flow) = match channel.quantity {
        Quantity::ActivePowerW => (38, 37, Some(role.flow_direction())),
        Quantity::ReactivePowerVar => (63, 37, Some(role.flow_direction())),
        Quantity::VoltageV => (29, 0, None),
        Quantity::FrequencyHz => (33, 0, None),
    };
    ReadingType {
        href: None,
        // 12 indicating: a value over the interval, not a register.
        accumulation_behaviour: Some(12),
        // 1 electricity secondary metered
        commodity: Some(1),
        // 2 average
        data_qualifier: Some(2),
        flow_direction: flow,
        interval_length_s: Some(interval_s),
        kind: Some(kind),
        max_number_of_intervals: None,
        phase: Some(phase),
        power_of_ten_multiplier: Some(multiplier(channel.quantity)),
        sub_interval_length_s: None,
        uom: Some(uom),
    }
}

/// Errors building mirror documents (a PEN that does not fit the mRID).
pub type MridError = sep2::mrid::PenTooLarge;

/// The MirrorUsagePoint csipd POSTs to create the usage point of `role`, with one
/// MirrorMeterReading (and its ReadingType) per channel.
pub fn usage_point(
    role: MupRole,
    lfdi: &str,
    pen: u32,
    channels: &[Channel],
    interval_s: u32,
) -> Result<MirrorUsagePoint, MridError> {
    let readings = channels
        .iter()
        .map(|&channel| {
            Ok(MirrorMeterReading {
                mrid: sep2::mrid::mirror_meter_reading(
                    lfdi,
                    role.name(),
                    channel_name(channel),
                    pen,
                )?,
                description: Some(format!("{} {}", role.name(), channel_name(channel))),
                reading_type: Some(reading_type(role, channel, interval_s)),
                ..MirrorMeterReading::default()
            })
        })
        .collect::<Result<Vec<_>, MridError>>()?;
    Ok(MirrorUsagePoint {
        href: None,
        mrid: sep2::mrid::mirror_usage_point(lfdi, role.name(), pen)?,
        description: Some(match role {
            MupRole::Site => "csipd site".to_string(),
            MupRole::Der => "csipd DER".to_string(),
        }),
        version: None,
        role_flags: role.role_flags(),
        service_category_kind: 0,
        status: 1,
        device_lfdi: lfdi.to_ascii_uppercase(),
        mirror_meter_readings: readings,
        post_rate_s: None,
    })
}

/// The MirrorMeterReading carrying one interval's average of `channel`, POSTed to the
/// usage point's href.
pub fn reading_post(
    role: MupRole,
    lfdi: &str,
    pen: u32,
    channel: Channel,
    interval: &IntervalAverages,
) -> Result<Option<MirrorMeterReading>, MridError> {
    let Some(average) = interval.averages.get(&channel) else {
        return Ok(None);
    };
    let scaled = average * 10f64.powi(-i32::from(multiplier(channel.quantity)));
    // Int48 range; a non-finite average never gets here (averaging drops them).
    let value = scaled.round().clamp(-(2f64.powi(47)), 2f64.powi(47) - 1.0) as i64;
    Ok(Some(MirrorMeterReading {
        mrid: sep2::mrid::mirror_meter_reading(lfdi, role.name(), channel_name(channel), pen)?,
        description: Some(format!("{} {}", role.name(), channel_name(channel))),
        reading: Some(Reading {
            // bit 0: valid
            quality_flags: Some(1),
            time_period: Some(DateTimeInterval {
                duration_s: interval.duration_s,
                start: interval.start_s,
            }),
            value: Some(value),
            ..Reading::default()
        }),
        reading_type: Some(reading_type(role, channel, interval.duration_s)),
        ..MirrorMeterReading::default()
    }))
}

/// Our usage point of `role` in a MirrorUsagePointList, found by mRID.
pub fn find_usage_point<'a>(
    list: &'a [MirrorUsagePoint],
    mrid: &str,
) -> Option<&'a MirrorUsagePoint> {
    list.iter().find(|mup| mup.mrid.eq_ignore_ascii_case(mrid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E3100000000";

    fn channel(quantity: Quantity, phase: Phase) -> Channel {
        Channel { quantity, phase }
    }

    #[test]
    fn reading_types_are_averages_with_the_right_units() {
        let w = reading_type(
            MupRole::Site,
            channel(Quantity::ActivePowerW, Phase::Total),
            60,
        );
        assert_eq!(
            (
                w.uom,
                w.kind,
                w.data_qualifier,
                w.flow_direction,
                w.phase,
                w.interval_length_s
            ),
            (Some(38), Some(37), Some(2), Some(1), Some(0), Some(60))
        );
        let var_b = reading_type(
            MupRole::Der,
            channel(Quantity::ReactivePowerVar, Phase::B),
            60,
        );
        assert_eq!(
            (var_b.uom, var_b.phase, var_b.flow_direction),
            (Some(63), Some(64), Some(19))
        );
        let v_a = reading_type(MupRole::Site, channel(Quantity::VoltageV, Phase::A), 60);
        assert_eq!(
            (v_a.uom, v_a.phase, v_a.power_of_ten_multiplier),
            (Some(29), Some(129), Some(-1))
        );
        let hz = reading_type(
            MupRole::Site,
            channel(Quantity::FrequencyHz, Phase::Total),
            60,
        );
        assert_eq!((hz.uom, hz.power_of_ten_multiplier), (Some(33), Some(-2)));
    }

    #[test]
    fn usage_points_carry_pen_suffixed_stable_mrids() {
        let channels = [
            channel(Quantity::ActivePowerW, Phase::Total),
            channel(Quantity::VoltageV, Phase::A),
        ];
        let site = usage_point(MupRole::Site, LFDI, 12345, &channels, 60).expect("mup");
        let again = usage_point(MupRole::Site, LFDI, 12345, &channels, 60).expect("mup");
        let der = usage_point(MupRole::Der, LFDI, 12345, &channels, 60).expect("mup");
        assert_eq!(site.mrid, again.mrid);
        assert_ne!(site.mrid, der.mrid);
        assert!(site.mrid.ends_with("00012345"));
        assert_eq!(site.role_flags, 0x03);
        assert_eq!(der.role_flags, 0x49);
        assert_eq!(site.mirror_meter_readings.len(), 2);
        assert!(
            site.mirror_meter_readings
                .iter()
                .all(|m| m.mrid.ends_with("00012345"))
        );
        assert_eq!(site.device_lfdi, LFDI);
    }

    #[test]
    fn reading_values_are_scaled_by_the_multiplier() {
        let v_a = channel(Quantity::VoltageV, Phase::A);
        let interval = IntervalAverages {
            start_s: 1_700_000_040,
            duration_s: 60,
            averages: BTreeMap::from([(v_a, 239.87)]),
            covered_s: 60,
        };
        let mmr = reading_post(MupRole::Site, LFDI, 1, v_a, &interval)
            .expect("mrid")
            .expect("has value");
        let reading = mmr.reading.expect("reading");
        assert_eq!(reading.value, Some(2399));
        assert_eq!(
            reading.time_period,
            Some(DateTimeInterval {
                duration_s: 60,
                start: 1_700_000_040
            })
        );
        let missing = reading_post(
            MupRole::Site,
            LFDI,
            1,
            channel(Quantity::FrequencyHz, Phase::Total),
            &interval,
        )
        .expect("mrid");
        assert!(missing.is_none());
    }
}
