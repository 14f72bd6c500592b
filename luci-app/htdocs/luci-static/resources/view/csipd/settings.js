'use strict';
'require view';
'require form';
'require rpc';
'require uci';
'require ui';

// Edits /etc/config/csipd. Option names and meanings are those of files/etc/config/csipd.
// Save runs the daemon's own checker (`ubus call csipd validate`, the same checks as
// `csipd check-config`) on the settings as they would be saved, and refuses to save
// what csipd would refuse to load, marking the fields concerned.

// `validate {sections}`: {"valid": bool, "errors": [{section, option, message}], ...}.
var callValidate = rpc.declare({
	object: 'csipd',
	method: 'validate',
	params: [ 'sections' ],
	expect: { '': {} }
});

// Problems the daemon found at the last Save, by "section.option": shown on the field
// until its value changes.
var serverErrors = {};

// Adds the daemon's verdict to an option's own validation.
function withDaemonCheck(o) {
	var own = o.validate;
	o.validate = function(section_id, value) {
		var verdict = own ? own.apply(this, arguments) : true;
		if (verdict !== true)
			return verdict;
		var e = serverErrors[section_id + '.' + this.option];
		var current = Array.isArray(value) ? value.join(' ') : (value == null ? '' : String(value));
		return (e && e.value == current) ? e.message : true;
	};
}

function eachOption(map, fn) {
	map.children.forEach(function(s) {
		s.children.forEach(function(o) { fn(s, o); });
	});
}

// LuCI's Australian zone names (System → System writes these); any POSIX TZ works too.
var ZONES = [ 'Australia/Adelaide', 'Australia/Brisbane', 'Australia/Broken_Hill', 'Australia/Darwin',
	'Australia/Eucla', 'Australia/Hobart', 'Australia/Lindeman', 'Australia/Lord_Howe',
	'Australia/Melbourne', 'Australia/Perth', 'Australia/Sydney', 'UTC' ];

function hhmm(section_id, value) {
	if (value == null || value === '' || /^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$/.test(value))
		return true;
	return _('Expecting a local time HH:MM (00:00 to 24:00)');
}

return view.extend({
	map: null,

	// Save: the form's own checks (parse), then the daemon's on the staged result; only
	// a configuration csipd accepts reaches UCI (and so Save & Apply's reload).
	handleSave: function(ev) {
		var map = this.map;
		return map.parse().then(function() {
			return callValidate(uci.sections('csipd'));
		}, function() {
			// A field failed LuCI's own check: let LuCI's save say which.
			return map.save();
		}).then(function(res) {
			if (res == null)
				return Promise.reject(new Error(_('Some fields are invalid.')));
			serverErrors = {};
			if (res.error)
				return Promise.reject(new Error(_('The settings could not be checked: %s').format(res.error)));
			if (res.valid)
				return map.save();
			var lines = [];
			(res.errors || []).forEach(function(e) {
				var title = e.option || e.section || '';
				eachOption(map, function(s, o) {
					if (o.option == e.option && (s.sectiontype == e.section || s.section == e.section || s.cfgsections().indexOf(e.section) > -1))
						title = o.title || e.option;
				});
				if (e.section && e.option) {
					var v = uci.get('csipd', e.section, e.option);
					serverErrors[e.section + '.' + e.option] = {
						value: Array.isArray(v) ? v.join(' ') : (v == null ? '' : String(v)),
						message: e.message
					};
				}
				lines.push(E('li', {}, [ E('strong', {}, [ title ]), ': ', e.message ]));
			});
			eachOption(map, function(s, o) {
				s.cfgsections().forEach(function(sid) { o.triggerValidation(sid); });
			});
			ui.addNotification(_('Not saved'), [
				E('p', {}, [ _('csipd would refuse these settings, so nothing was saved. Fix the marked fields:') ]),
				E('ul', { 'id': 'csipd-save-errors' }, lines)
			], 'warning');
			return Promise.reject(new Error(_('csipd would refuse these settings')));
		});
	},

	render: function() {
		var m, s, o;

		m = new form.Map('csipd', _('Dynamic connection (csipd)'),
			_('Connection to the network operator\'s CSIP-AUS server, the site\'s meter and inverters, and the owner\'s own limits.'));

		// csipd 'main'
		s = m.section(form.NamedSection, 'main', 'csipd', _('Daemon'));
		o = s.option(form.ListValue, 'log_level', _('Log level'));
		o.value('off', _('Off'));
		o.value('error', _('Errors only'));
		o.value('warn', _('Warnings and errors'));
		o.value('info', _('Normal'));
		o.value('debug', _('Debug'));
		o.value('trace', _('Trace (very verbose)'));
		o.default = 'info';
		o = s.option(form.Value, 'data_dir', _('Data directory'), _('State that must survive a reboot; kept on flash and written rarely.'));
		o.placeholder = _('default: /etc/csipd');
		o = s.option(form.Value, 'telemetry_dir', _('Telemetry directory'), _('Telemetry that may be lost on reboot (RAM).'));
		o.placeholder = _('default: /tmp/csipd');
		o = s.option(form.Value, 'status_listen', _('Status address'), _('Address and port of the status server used by LuCI and <code>csipd status</code>; a non-local address also needs "Allow status from the network".'));
		o.placeholder = _('default: 127.0.0.1:8080');
		o = s.option(form.Flag, 'status_allow_remote', _('Allow status from the network'), _('Needed before the status address may be reachable from other machines. The status page has no password.'));
		o = s.option(form.Value, 'timezone', _('Time zone'), _('For tariff windows and the times shown. A zone name as on System → System, or a POSIX TZ string such as AEST-10. Empty: the router\'s time zone.'));
		ZONES.forEach(function(z) { o.value(z); });
		o.placeholder = _('the router\'s time zone');

		// server 'utility'
		s = m.section(form.NamedSection, 'utility', 'server', _('Network operator server (IEEE 2030.5 / CSIP-AUS)'));
		s.tab('server', _('Server'));
		s.tab('certificates', _('Certificates'));
		s.tab('lab', _('Lab only'));
		o = s.taboption('server', form.Value, 'dcap_url', _('Server address (DeviceCapability URL)'), _('Given by the network operator. Empty: csipd applies only your own limits.'));
		o.placeholder = _('https://… from the network operator');
		o = s.taboption('server', form.Value, 'server_url', _('Server for automatic discovery (CSIP-AUS v1.3)'), _('Only the server\'s address (https://host or https://host:port, no path): csipd asks it which CSIP-AUS version and DeviceCapability to use. Used only when the Server address above is empty; when both are set, the Server address wins.'));
		o.placeholder = _('https://host from the network operator');
		o.validate = function(section_id, value) {
			if (value == null || value === '' || /^https?:\/\/[^\/?#@\s]+\/?$/.test(value))
				return true;
			return _('Expecting https://host or https://host:port, without a path');
		};
		o = s.taboption('server', form.Value, 'nmi', _('Meter number (NMI)'), _('National Metering Identifier of the connection point, on the electricity bill.'));
		o = s.taboption('server', form.Value, 'pen', _('Enterprise number (IANA PEN)'), _('Private Enterprise Number used in the IDs (mRIDs) csipd creates. Leave empty unless the manufacturer gives one.'));
		o.datatype = 'uinteger';
		o = s.taboption('server', form.ListValue, 'profile', _('Standard'));
		o.value('csip-aus', _('CSIP-AUS (site limits)'));
		o.value('csip', _('CSIP (plain IEEE 2030.5)'));
		o.default = 'csip-aus';
		o = s.taboption('server', form.ListValue, 'csipaus_namespace', _('CSIP-AUS version (XML namespace)'), _('Which CSIP-AUS version the server speaks; the network operator says.'));
		o.value('default', _('v1.1 / v1.2') + ' (https://csipaus.org/ns)');
		o.value('v1.3', _('v1.3') + ' (https://csipaus.org/ns/v1.3)');
		o.default = 'default';
		o = s.taboption('server', form.Flag, 'schema_2018', _('IEEE 2030.5-2018 bodies'), _('Send plain IEEE 2030.5-2018 documents (no CSIP-AUS extensions, no NMI) to a server that refuses them; the network operator says.'));
		o = s.taboption('server', form.Flag, 'inband_registration', _('Check the registration PIN'), _('In-band registration: compare the server\'s registration PIN with the one the network operator gave.'));
		o = s.taboption('server', form.Value, 'registration_pin', _('Registration PIN'));
		o.datatype = 'and(uinteger,maxlength(6))';
		o.depends('inband_registration', '1');
		o = s.taboption('certificates', form.Value, 'cert', _('Client certificate file'), _('Set by the Certificate page when you install the signed certificate.'));
		o.placeholder = _('set on the Certificate page');
		o = s.taboption('certificates', form.Value, 'key', _('Private key file'), _('Set by the Certificate page when it makes the key.'));
		o.placeholder = _('set on the Certificate page');
		o = s.taboption('certificates', form.Value, 'ca', _('Network operator CA bundle file'), _('Empty: the router\'s system trust store.'));
		o.placeholder = _('system trust store');
		o = s.taboption('lab', form.Flag, 'tls_insecure_lab', _('Skip server certificate check'), _('Lab servers only.'));
		o = s.taboption('lab', form.Flag, 'allow_plain_http', _('Allow http:// URL'), _('Lab servers only: no encryption at all.'));

		// limits 'fixed'
		s = m.section(form.NamedSection, 'fixed', 'limits', _('Fixed limits'), _('Applied together with the utility\'s limits; the tighter one wins. Empty: no fixed limit.'));
		o = s.option(form.Value, 'export_limit_w', _('Export limit (W)'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'import_limit_w', _('Import limit (W)'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'generation_limit_w', _('Generation limit (W)'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'load_limit_w', _('Load limit (W)'));
		o.datatype = 'uinteger';
		o = s.option(form.Flag, 'connect', _('Connect'), _('Off keeps the inverters disconnected.'));
		o.default = '1';

		// tariff sections
		s = m.section(form.GridSection, 'tariff', _('Tariff export windows'), _('An export limit during a local time window, for two-way tariffs.'));
		s.addremove = true;
		s.anonymous = true;
		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o = s.option(form.Value, 'start', _('Start'));
		o.placeholder = '10:00';
		o.rmempty = false;
		o.validate = hhmm;
		o = s.option(form.Value, 'end', _('End'));
		o.placeholder = '15:00';
		o.rmempty = false;
		o.validate = hhmm;
		o = s.option(form.MultiValue, 'days', _('Days'), _('None selected: every day.'));
		o.value('mon', _('Mon'));
		o.value('tue', _('Tue'));
		o.value('wed', _('Wed'));
		o.value('thu', _('Thu'));
		o.value('fri', _('Fri'));
		o.value('sat', _('Sat'));
		o.value('sun', _('Sun'));
		o = s.option(form.Value, 'export_limit_w', _('Export limit (W)'));
		o.datatype = 'uinteger';
		o.rmempty = false;

		// price 'feed_in'
		s = m.section(form.NamedSection, 'feed_in', 'price', _('Negative feed-in price'), _('Zero export while exporting would cost money.'));
		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o = s.option(form.ListValue, 'source', _('Price source'));
		o.value('amber', 'Amber Electric');
		o.default = 'amber';
		o = s.option(form.Value, 'url', _('API URL'));
		o.placeholder = _('Amber\'s API address');
		o = s.option(form.Value, 'site_id', _('Site ID'));
		o = s.option(form.Value, 'token', _('API token'));
		o.password = true;
		o = s.option(form.Value, 'poll_interval_s', _('Poll interval (s)'));
		o.datatype = 'range(30,3600)';
		o.placeholder = '300';
		o = s.option(form.Value, 'max_age_s', _('Maximum price age (s)'), _('An older price is not trusted. 60 to 86400 s.'));
		o.datatype = 'range(60,86400)';
		o.placeholder = '900';

		// device sections
		s = m.section(form.GridSection, 'device', _('Devices'), _('SunSpec Modbus meter and inverters, or a Tesla Powerwall gateway as the site meter.'));
		s.addremove = true;
		s.anonymous = false;
		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o = s.option(form.ListValue, 'role', _('Type'));
		o.value('inverter', _('Solar inverter'));
		o.value('meter', _('Site meter'));
		o.value('storage', _('Battery'));
		o = s.option(form.ListValue, 'transport', _('Connection'));
		o.value('tcp', _('Modbus TCP'));
		o.value('rtu', _('Modbus RTU (RS-485)'));
		o.value('powerwall', _('Tesla Powerwall gateway (site meter)'));
		o = s.option(form.Value, 'host', _('Address'));
		o.datatype = 'host';
		o.depends('transport', 'tcp');
		o.depends('transport', 'powerwall');
		o = s.option(form.Value, 'port', _('Port'));
		o.datatype = 'port';
		o.placeholder = _('502 (Powerwall: 443)');
		o.depends('transport', 'tcp');
		o.depends('transport', 'powerwall');
		o.modalonly = true;
		o = s.option(form.Value, 'password', _('Gateway password'), _('The Powerwall\'s customer password; a password file is better.'));
		o.password = true;
		o.depends('transport', 'powerwall');
		o.modalonly = true;
		o = s.option(form.Value, 'password_file', _('Gateway password file'), _('A file holding the customer password, instead of the password above.'));
		o.placeholder = _('e.g. /etc/csipd/powerwall.pw');
		o.depends('transport', 'powerwall');
		o.modalonly = true;
		o = s.option(form.Value, 'fingerprint', _('Gateway certificate fingerprint (SHA-256)'), _('Empty: the first certificate seen is trusted and kept (shown on the Status page). Set it, or delete the kept file, when the gateway is replaced.'));
		o.depends('transport', 'powerwall');
		o.modalonly = true;
		o = s.option(form.Value, 'path', _('Serial port'));
		o.placeholder = _('e.g. /dev/ttyUSB0');
		o.depends('transport', 'rtu');
		o = s.option(form.ListValue, 'baud', _('Baud rate'));
		[ '1200', '2400', '4800', '9600', '19200', '38400', '57600', '115200' ].forEach(function(b) { o.value(b); });
		o.default = '9600';
		o.depends('transport', 'rtu');
		o.modalonly = true;
		o = s.option(form.ListValue, 'parity', _('Parity'));
		o.value('none', _('none'));
		o.value('even', _('even'));
		o.value('odd', _('odd'));
		o.depends('transport', 'rtu');
		o.modalonly = true;
		o = s.option(form.ListValue, 'stop_bits', _('Stop bits'));
		o.value('1');
		o.value('2');
		o.depends('transport', 'rtu');
		o.modalonly = true;
		o = s.option(form.Value, 'unit_id', _('Modbus unit ID'));
		o.datatype = 'range(1,247)';
		o.placeholder = '1';
		o = s.option(form.Value, 'chain_device', _('Device in the unit\'s chain'), _('When one Modbus unit holds several SunSpec devices (a SolarEdge inverter and its meters): which one, counting from 1. Empty: the first with this type\'s models.'));
		o.datatype = 'range(1,16)';
		o.modalonly = true;
		o = s.option(form.ListValue, 'power_control', _('Power limit written to'), _('Automatic uses SolarEdge\'s own power control registers on a SolarEdge without a SunSpec control model.'));
		o.value('auto', _('Automatic'));
		o.value('sunspec', _('SunSpec (model 123 or 704)'));
		o.value('solaredge', _('SolarEdge power control registers'));
		o.default = 'auto';
		o.depends('role', 'inverter');
		o.modalonly = true;
		o = s.option(form.Value, 'sunspec_base', _('SunSpec base register'), _('Empty: scan 0, 40000 and 50000.'));
		o.datatype = 'range(0,65535)';
		o.modalonly = true;
		o = s.option(form.Value, 'rated_w', _('Rated power (W)'), _('Empty: read from the device.'));
		o.datatype = 'uinteger';
		o.modalonly = true;
		o = s.option(form.Value, 'capacity_wh', _('Battery capacity (Wh)'), _('Usable capacity, for the utility\'s storage reports (CSIP-AUS v1.3). Empty: not reported.'));
		o.datatype = 'range(1,10000000)';
		o.depends('role', 'storage');
		o.modalonly = true;
		o = s.option(form.Value, 'timeout_ms', _('Timeout (ms)'));
		o.datatype = 'range(50,30000)';
		o.placeholder = '1000';
		o.modalonly = true;

		// control 'site'
		s = m.section(form.NamedSection, 'site', 'control', _('Site control'));
		o = s.option(form.Value, 'cycle_s', _('Control cycle (s)'));
		o.datatype = 'range(0.1,60)';
		o.placeholder = '1';
		o = s.option(form.Value, 'meter_stale_s', _('Meter silence before the safety limit (s)'), _('Meter data older than this puts the site on the safety export limit. Must be longer than the control cycle.'));
		o.datatype = 'ufloat';
		o.placeholder = '10';
		o = s.option(form.Value, 'failsafe_export_limit_w', _('Safety export limit (W)'), _('Export allowed while the meter is silent.'));
		o.datatype = 'uinteger';
		o.placeholder = '0';
		o = s.option(form.Value, 'fallback_export_limit_w', _('Export limit until the network operator\'s is known (W)'), _('With a utility server: the export allowed before its limits are first received (server not reached, not registered, PIN mismatch, no DER program) and while it sets no export limit. Set it to the connection agreement\'s fallback export limit, e.g. 1500. Empty: the safety export limit.'));
		o.datatype = 'uinteger';
		o.placeholder = _('safety export limit');
		o = s.option(form.Value, 'ramp_up_pct_per_s', _('Ramp up (% of rated power per s)'), _('When the utility gives no ramp rate. Reductions are never ramped.'));
		o.datatype = 'ufloat';
		o.placeholder = '10';
		o = s.option(form.Value, 'inverter_response_s', _('Inverter response time (s)'), _('Time constant of the inverters\' response to a new limit; a sudden excess is then cut deeper for one cycle. 0: off.'));
		o.datatype = 'range(0,10)';
		o.placeholder = '0';
		o = s.option(form.Value, 'meter_period_ms', _('Meter read interval (ms)'), _('How often the site meter is read between control cycles; an export over the limit seen in between is cut at once. Empty: chosen from the meter\'s connection (network 500 ms; a serial line as often as it carries).'));
		o.datatype = 'range(100,60000)';
		o.placeholder = _('from the connection');

		// mqtt 'broker': publishing the status to an MQTT broker (Home Assistant etc.).
		s = m.section(form.NamedSection, 'broker', 'mqtt', _('MQTT (Home Assistant, Node-RED)'),
			_('Publishes what the Status page shows to an MQTT broker, with Home Assistant discovery. Read only: nothing sent to csipd over MQTT changes a limit.'));
		o = s.option(form.Flag, 'enabled', _('Publish to an MQTT broker'));
		o.default = '0';
		o = s.option(form.Value, 'url', _('Broker address'), _('mqtt://host:port, or mqtts://host:port for an encrypted connection (default ports 1883 and 8883). No path or user name in it.'));
		o.placeholder = 'mqtt://192.168.1.1:1883';
		o.validate = function(section_id, value) {
			if (value == null || value === '' || /^mqtts?:\/\//.test(value))
				return true;
			return _('Expecting mqtt://host:port or mqtts://host:port');
		};
		o = s.option(form.Value, 'username', _('User name'), _('Empty: the broker takes anonymous connections.'));
		o = s.option(form.Value, 'password', _('Password'), _('Needs a user name. Kept in /etc/config/csipd; a password file is better.'));
		o.password = true;
		o = s.option(form.Value, 'password_file', _('Password file'), _('A file whose first line is the password, instead of the password above.'));
		o.placeholder = _('e.g. /etc/csipd/mqtt.pass');
		o = s.option(form.Value, 'ca', _('Broker CA bundle file'), _('mqtts only. Empty: the router\'s system trust store.'));
		o.placeholder = _('system trust store');
		o.depends({ url: /^mqtts:\/\// });
		o = s.option(form.Value, 'cert', _('Client certificate file'), _('mqtts only, for brokers that require one; set together with the key.'));
		o.depends({ url: /^mqtts:\/\// });
		o = s.option(form.Value, 'key', _('Client key file'), _('mqtts only; set together with the certificate.'));
		o.depends({ url: /^mqtts:\/\// });
		o = s.option(form.Value, 'client_id', _('Client ID'), _('Empty: csipd- followed by the topic prefix.'));
		o = s.option(form.Value, 'base_topic', _('Topic prefix'), _('Every topic starts with it, e.g. csipd/limits.'));
		o.placeholder = 'csipd';
		o = s.option(form.ListValue, 'qos', _('Delivery guarantee (QoS)'));
		o.value('0', _('0: at most once'));
		o.value('1', _('1: at least once'));
		o.value('2', _('2: exactly once'));
		o.default = '0';
		o = s.option(form.Flag, 'retain', _('Keep the latest values on the broker (retain)'), _('A client that subscribes later gets them at once.'));
		o.default = '1';
		o = s.option(form.Value, 'interval_s', _('Publish interval (s)'), _('Readings are published, and everything republished, this often. 1 to 3600 s; limits and events are also published within a second of a change.'));
		o.datatype = 'range(1,3600)';
		o.placeholder = '10';
		o = s.option(form.Flag, 'discovery', _('Home Assistant discovery'), _('The entities appear in Home Assistant without any YAML.'));
		o.default = '1';
		o = s.option(form.Value, 'discovery_prefix', _('Home Assistant discovery prefix'));
		o.placeholder = 'homeassistant';

		// A user whose ACL is read-only sees the settings but no field to change and no
		// Save button (LuCI hides the footer of read-only maps).
		if (typeof L.hasViewPermission == 'function' && L.hasViewPermission() === false)
			m.readonly = true;
		eachOption(m, function(sec, opt) { withDaemonCheck(opt); });
		this.map = m;
		return m.render();
	}
});
