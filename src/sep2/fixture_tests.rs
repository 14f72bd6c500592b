//! Every captured utility-server response parses, with assertions on its real values.

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/utility-servers/",
            $name
        ))
    };
}

fn ok<T: Readable>(xml: &[u8]) -> T {
    match read::<T>(xml) {
        Ok(v) => v,
        Err(e) => panic!("fixture did not parse: {e}"),
    }
}

#[test]
fn dcap() {
    let d: DeviceCapability = ok(fixture!("getDcap.xml"));
    assert_eq!(d.time_link.unwrap().href, "/api/v2/tm");
    let edev = d.end_device_list_link.unwrap();
    assert_eq!((edev.href.as_str(), edev.all), ("/api/v2/edev", Some(5)));
    let mup = d.mirror_usage_point_list_link.unwrap();
    assert_eq!((mup.href.as_str(), mup.all), ("/api/v2/mup", Some(2)));
    assert!(d.der_program_list_link.is_none());
}

#[test]
fn time() {
    let t: Time = ok(fixture!("getTm.xml"));
    assert_eq!(t.current_time, 1682475024);
    assert_eq!(t.dst_end_time, Some(1699174800));
    assert_eq!(t.dst_offset_s, 3600);
    assert_eq!(t.dst_start_time, Some(1678615200));
    assert_eq!(t.local_time, Some(1682453424));
    assert_eq!(t.quality, Some(5));
    assert_eq!(t.tz_offset_s, -25200);
}

#[test]
fn end_device_list_eq() {
    let l: EndDeviceList = ok(fixture!("getEdev.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (5, 5, 3));
    assert_eq!(l.subscribable, Some(1));
    let d = &l.items[0];
    assert_eq!(d.href.as_deref(), Some("/api/v2/edev/_EQLDEV3"));
    assert!(d.is_lfdi("4075de6031e562acf4d9eaa765a5b2ed00057269"));
    assert_eq!(d.sfdi, 173034634270);
    assert_eq!(d.changed_time, 1682464970);
    assert_eq!(d.enabled, Some(true));
    assert_eq!(d.der_list_link.as_ref().unwrap().all, Some(1));
    let fsa = d.function_set_assignments_list_link.as_ref().unwrap();
    assert_eq!(
        (fsa.href.as_str(), fsa.all),
        ("/api/v2/edev/_EQLDEV3/fsa", Some(2))
    );
    assert_eq!(
        d.registration_link.as_ref().unwrap().href,
        "/api/v2/edev/_EQLDEV3/rg"
    );
    let agg = &l.items[2];
    assert_eq!(agg.sfdi, 476530583793);
    assert!(agg.der_list_link.is_none());
    assert_eq!(agg.subscription_list_link.as_ref().unwrap().all, Some(0));
}

#[test]
fn end_device_list_csipaus() {
    // This capture spells the element `LFDI`, has a non-hex LFDI ("...ale42c...") for
    // another device, `enabled` as 1 and the csipaus ConnectionPointLink first.
    let l: EndDeviceList = ok(fixture!("getEdev_csipaus.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (3, 3, 3));
    assert_eq!(
        l.items[0].lfdi.as_deref(),
        Some("9DFDD56F6128CDC894ALE42C698CAB197184ABE9")
    );
    let d = &l.items[1];
    assert!(d.is_lfdi("12A4A4B406AD102E7421019135FFA2805235A21C"));
    assert_eq!(d.sfdi, 50044792964);
    assert_eq!(d.enabled, Some(true));
    assert_eq!(d.connection_point_link.as_ref().unwrap().href, "/edev/1/cp");
    assert_eq!(d.log_event_list_link.as_ref().unwrap().all, Some(9));
}

#[test]
fn end_devices() {
    let d: EndDevice = ok(fixture!("getEdev_E-AGGREQL.xml"));
    assert_eq!(
        d.lfdi.as_deref(),
        Some("B1857F74B5DA25E82E78BE34877221CB89D55F45")
    );
    assert_eq!(d.sfdi, 476530583793);
    let d: EndDevice = ok(fixture!("getEdev__EQLDEV3.xml"));
    assert_eq!(d.sfdi, 173034634270);
    assert_eq!(d.function_set_assignments_list_link.unwrap().all, Some(2));
    let d: EndDevice = ok(fixture!("getEdev_csipaus_edev1.xml"));
    assert_eq!(d.connection_point_link.unwrap().href, "/edev/1/cp");
    assert_eq!(
        d.lfdi.as_deref(),
        Some("12A4A4B406AD102E7421019135FFA2805235A21C")
    );
    assert_eq!(d.sfdi, 50044792964);
}

#[test]
fn registration() {
    let r: Registration = ok(fixture!("getEdev__EQLDEV3_rg.xml"));
    assert_eq!(r.href.as_deref(), Some("/edev/3/reg"));
    assert_eq!(r.date_time_registered, 1364774400);
    assert_eq!(r.pin, 123455);
}

#[test]
fn connection_point() {
    let c: ConnectionPoint = ok(fixture!("getEdev_cp_csipaus.xml"));
    assert_eq!(c.connection_point_id, "1234567890");
}

#[test]
fn der_list() {
    let l: DerList = ok(fixture!("getEdev__EQLDEV3_der.xml"));
    assert_eq!((l.all, l.results, l.poll_rate_s), (1, 1, Some(301)));
    let der = &l.items[0];
    let base = "/api/v2/edev/_EQLDEV3/der/_EQLDEV3";
    assert_eq!(
        der.der_availability_link.as_ref().unwrap().href,
        format!("{base}/dera")
    );
    assert_eq!(
        der.der_capability_link.as_ref().unwrap().href,
        format!("{base}/dercap")
    );
    assert_eq!(
        der.der_settings_link.as_ref().unwrap().href,
        format!("{base}/derg")
    );
    assert_eq!(
        der.der_status_link.as_ref().unwrap().href,
        format!("{base}/ders")
    );
}

#[test]
fn fsa_list() {
    let l: FunctionSetAssignmentsList = ok(fixture!("getEdev__EQLDEV3_fsa.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (2, 2, 2));
    let f = &l.items[0];
    assert_eq!(f.mrid, "DE045D141A8B335F96AFDE5AFECDBA09");
    assert_eq!(f.description.as_deref(), Some("FSA 2"));
    assert_eq!(f.version, Some(1));
    assert_eq!(f.subscribable, Some(1));
    let derp = f.der_program_list_link.as_ref().unwrap();
    assert_eq!(
        (derp.href.as_str(), derp.all),
        ("/api/v2/edev/_EQLDEV3/fsa/2/derp", Some(1))
    );
    assert_eq!(
        f.response_set_list_link.as_ref().unwrap().href,
        "/api/v2/rsps"
    );
    assert_eq!(f.time_link.as_ref().unwrap().href, "/api/v2/tm");
    assert_eq!(
        l.items[1].description.as_deref(),
        Some("Inverter - _EQLDEV3 FSA")
    );
}

#[test]
fn der_program_lists() {
    let l: DerProgramList = ok(fixture!("getEdev__EQLDEV3_fsa_1_derp.xml"));
    assert_eq!((l.all, l.poll_rate_s), (1, Some(301)));
    let p = &l.items[0];
    assert_eq!(p.mrid, "C882D1F83246441786FB8278FECDBA09");
    assert_eq!(p.primacy, 102);
    assert!(p.default_der_control_link.is_none());
    assert_eq!(p.der_control_list_link.as_ref().unwrap().all, Some(0));
    let l: DerProgramList = ok(fixture!("getEdev__EQLDEV3_fsa_2_derp.xml"));
    let p = &l.items[0];
    assert_eq!(p.href.as_deref(), Some("/api/v2/derp/TESTPRG3"));
    assert_eq!(p.primacy, 1);
    assert_eq!(
        p.default_der_control_link.as_ref().unwrap().href,
        "/api/v2/derp/TESTPRG3/dderc"
    );
    assert_eq!(p.der_control_list_link.as_ref().unwrap().all, Some(5));
    assert_eq!(
        p.der_curve_list_link.as_ref().unwrap().href,
        "/api/v2/derp/TESTPRG3/dc"
    );
}

#[test]
fn der_control_list_sapn() {
    let l: DerControlList = ok(fixture!("getDerp_derc_sapn.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (3, 3, 3));
    for c in &l.items {
        assert_eq!(c.response_required, Some(0x03));
        assert_eq!(
            c.reply_to.as_deref(),
            Some("/rsps/2dbac664c4e406e56169858ee224ca415849bc43/rsp")
        );
        assert_eq!(c.randomize_start_s, Some(0));
        assert_eq!(c.version, Some(1));
    }
    let c = &l.items[0];
    assert_eq!(c.mrid, "f51df42347494526b7cc2fe85c98aec3");
    assert_eq!(c.creation_time, 1726632956);
    assert_eq!(c.event_status.current_status, CurrentStatus::Cancelled);
    assert_eq!(c.event_status.date_time, 1726633064);
    assert!(!c.event_status.potentially_superseded);
    assert_eq!(c.event_status.reason.as_deref(), Some("Created"));
    assert_eq!(
        c.interval,
        DateTimeInterval {
            duration_s: 300,
            start: 1726632956
        }
    );
    let exp = c.base.op_mod_exp_lim_w.unwrap();
    assert_eq!(
        exp,
        ActivePower {
            multiplier: 0,
            value: 10000
        }
    );
    assert_eq!(exp.watts(), 10000.0);
    assert!(c.base.op_mod_imp_lim_w.is_none());
    assert_eq!(l.items[1].base.op_mod_exp_lim_w.unwrap().watts(), 10000.0);
    let active = &l.items[2];
    assert_eq!(active.event_status.current_status, CurrentStatus::Active);
    assert_eq!(
        active.interval,
        DateTimeInterval {
            duration_s: 600,
            start: 1726633063
        }
    );
    assert_eq!(active.base.op_mod_exp_lim_w.unwrap().watts(), 0.0);
}

#[test]
fn default_der_control_sapn() {
    let d: DefaultDerControl = ok(fixture!("getDerp_dderc_sapn.xml"));
    assert_eq!(d.mrid.as_deref(), Some("03e42dbac664c4e066e77a5d00054666"));
    assert_eq!(d.subscribable, Some(1));
    assert_eq!(d.set_grad_w, Some(27));
    assert_eq!(
        d.base.op_mod_exp_lim_w,
        Some(ActivePower {
            multiplier: 0,
            value: 1500
        })
    );
    assert_eq!(d.base.op_mod_imp_lim_w, None);
}

#[test]
fn der_control_list_eq_five() {
    let l: DerControlList = ok(fixture!("getDerp_TESTPROG3_derc.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (5, 5, 5));
    let c = &l.items[0];
    assert_eq!(c.mrid, "DC1B27AC943B44AC87DAF7E162B6F6D4");
    assert_eq!(c.description.as_deref(), Some("Scheduled DERC"));
    assert_eq!(c.reply_to.as_deref(), Some("/api/v2/rsps/res-ms/rsp"));
    assert_eq!(c.response_required, Some(3));
    assert_eq!(c.event_status.current_status, CurrentStatus::Scheduled);
    assert_eq!(c.event_status.potentially_superseded_time, Some(1682511010));
    // `<reason/>` is empty: no reason.
    assert_eq!(c.event_status.reason, None);
    assert_eq!(
        c.interval,
        DateTimeInterval {
            duration_s: 300,
            start: 1682475300
        }
    );
    assert_eq!(c.base.op_mod_imp_lim_w.unwrap().watts(), 3512.0);
    assert_eq!(c.base.op_mod_exp_lim_w.unwrap().watts(), 2512.0);
    assert_eq!(
        c.base.op_mod_gen_lim_w,
        Some(ActivePower {
            multiplier: 4,
            value: 3
        })
    );
    assert_eq!(c.base.op_mod_gen_lim_w.unwrap().watts(), 30000.0);
    assert_eq!(c.base.op_mod_load_lim_w.unwrap().watts(), 30000.0);
    let watts: Vec<(f64, f64)> = l
        .items
        .iter()
        .map(|c| {
            (
                c.base.op_mod_imp_lim_w.unwrap().watts(),
                c.base.op_mod_exp_lim_w.unwrap().watts(),
            )
        })
        .collect();
    assert_eq!(
        watts,
        vec![
            (3512.0, 2512.0),
            (2510.0, 2500.0),
            (5000.0, 5000.0),
            (12000.0, 10000.0),
            (0.0, 0.0)
        ]
    );
    let starts: Vec<i64> = l.items.iter().map(|c| c.interval.start).collect();
    assert_eq!(
        starts,
        vec![1682475300, 1682475600, 1682475900, 1682476200, 1682476500]
    );
}

#[test]
fn der_control_list_empty() {
    let l: DerControlList = ok(fixture!("getDerp_P-EQLDEV3_derc.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (0, 0, 0));
    assert_eq!(l.href.as_deref(), Some("/api/v2/derp/P-_EQLDEV3/derc"));
}

#[test]
fn default_der_control_eq() {
    let d: DefaultDerControl = ok(fixture!("getDerp_TESTPROG3_dderc.xml"));
    assert_eq!(d.mrid.as_deref(), Some("E6F3A83FC1E64929BB4502AA0CEA0FDB"));
    assert_eq!(d.description.as_deref(), Some("Default DERC"));
    assert_eq!(d.base.op_mod_imp_lim_w.unwrap().watts(), 1500.0);
    assert_eq!(d.base.op_mod_exp_lim_w.unwrap().watts(), 1500.0);
    assert_eq!(d.base.op_mod_energize, Some(true));
    assert_eq!(d.set_soft_grad_w, Some(1));
    assert_eq!(d.set_grad_w, None);
}

#[test]
fn mirror_usage_point_list() {
    let l: MirrorUsagePointList = ok(fixture!("getMup.xml"));
    assert_eq!((l.all, l.results, l.items.len()), (2, 2, 2));
    let der = &l.items[0];
    assert_eq!(der.mrid, "4075DE6031E562ACF4D9EA4900057269");
    assert_eq!(der.description.as_deref(), Some("Device Measurement"));
    // roleFlags is hexBinary: "49" = isMirror | isDER | isSubmeter.
    assert_eq!(der.role_flags, 0x49);
    assert_eq!(der.service_category_kind, 0);
    assert_eq!(der.status, 1);
    assert_eq!(der.device_lfdi, "4075DE6031E562ACF4D9EAA765A5B2ED00057269");
    let site = &l.items[1];
    assert_eq!(site.role_flags, 0x03);
    assert_eq!(site.description.as_deref(), Some("Site Measurement"));
}

#[test]
fn every_fixture_is_covered() {
    // Guards against a new capture being added without a test above.
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/utility-servers"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("fixture directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 19, "fixtures: {names:?}");
}
