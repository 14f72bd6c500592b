'use strict';
'require view';
'require form';

// Edits /etc/config/csipd. Option names and meanings are those of files/etc/config/csipd
// (`csipd check-config` validates the result; the daemon restarts on save via procd).

function hhmm(section_id, value) {
	if (value == null || value === '' || /^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$/.test(value))
		return true;
	return _('Expecting a local time HH:MM (00:00 to 24:00)');
}

return view.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('csipd', _('Dynamic connection (csipd)'),
			_('Connection to the network operator\'s CSIP-AUS server, the site\'s meter and inverters, and the owner\'s own limits.'));

		// csipd 'main'
		s = m.section(form.NamedSection, 'main', 'csipd', _('Daemon'));
		o = s.option(form.ListValue, 'log_level', _('Log level'));
		o.value('error');
		o.value('warn');
		o.value('info');
		o.value('debug');
		o.value('trace');
		o.default = 'info';
		o = s.option(form.Value, 'data_dir', _('Data directory'), _('State that must survive a reboot; kept on flash and written rarely.'));
		o.placeholder = '/etc/csipd';
		o = s.option(form.Value, 'telemetry_dir', _('Telemetry directory'), _('Telemetry that may be lost on reboot (RAM).'));
		o.placeholder = '/tmp/csipd';
		o = s.option(form.Value, 'status_listen', _('Status address'), _('Address of the status server used by LuCI and <code>csipd status</code>.'));
		o.placeholder = '127.0.0.1:8080';
		o = s.option(form.Flag, 'status_allow_remote', _('Allow remote status'), _('Needed before the status address may be reachable from the network. It has no password.'));
		o = s.option(form.Value, 'timezone', _('Time zone'), _('POSIX TZ string for tariff windows, e.g. AEST-10; empty uses the system time zone.'));

		// server 'utility'
		s = m.section(form.NamedSection, 'utility', 'server', _('Utility server'));
		s.tab('server', _('Server'));
		s.tab('certificates', _('Certificates'));
		s.tab('lab', _('Lab only'));
		o = s.taboption('server', form.Value, 'dcap_url', _('DeviceCapability URL'), _('Given by the network operator or installer.'));
		o.placeholder = 'https://csip.example-utility.com.au/dcap';
		o = s.taboption('server', form.Value, 'nmi', _('NMI'), _('National Metering Identifier of the connection point (on the electricity bill).'));
		o = s.taboption('server', form.Value, 'pen', _('IANA PEN'), _('Private Enterprise Number used in the IDs csipd creates.'));
		o.datatype = 'uinteger';
		o = s.taboption('server', form.ListValue, 'profile', _('Profile'));
		o.value('csip-aus', _('CSIP-AUS (site limits)'));
		o.value('csip', _('CSIP (plain IEEE 2030.5)'));
		o.default = 'csip-aus';
		o = s.taboption('server', form.ListValue, 'csipaus_namespace', _('CSIP-AUS namespace'));
		o.value('default', 'https://csipaus.org/ns');
		o.value('v1.3', 'https://csipaus.org/ns/v1.3-beta/storage');
		o.default = 'default';
		o = s.taboption('server', form.Flag, 'inband_registration', _('In-band registration'), _('Register in band and check the server\'s registration PIN.'));
		o = s.taboption('server', form.Value, 'registration_pin', _('Registration PIN'));
		o.datatype = 'and(uinteger,maxlength(6))';
		o.depends('inband_registration', '1');
		o = s.taboption('certificates', form.Value, 'cert', _('Client certificate'), _('PEM file; see the Certificate page for its LFDI and SFDI.'));
		o.placeholder = '/etc/csipd/client.crt';
		o = s.taboption('certificates', form.Value, 'key', _('Private key'));
		o.placeholder = '/etc/csipd/client.key';
		o = s.taboption('certificates', form.Value, 'ca', _('Server CA bundle'), _('Empty uses the system trust store.'));
		o.placeholder = '/etc/csipd/utility-ca.pem';
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
		o.placeholder = 'https://api.amber.com.au/v1';
		o = s.option(form.Value, 'site_id', _('Site ID'));
		o = s.option(form.Value, 'token', _('API token'));
		o.password = true;
		o = s.option(form.Value, 'poll_interval_s', _('Poll interval (s)'));
		o.datatype = 'range(30,3600)';
		o.placeholder = '300';
		o = s.option(form.Value, 'max_age_s', _('Maximum price age (s)'));
		o.datatype = 'uinteger';
		o.placeholder = '900';

		// device sections
		s = m.section(form.GridSection, 'device', _('Devices'), _('SunSpec Modbus meter and inverters.'));
		s.addremove = true;
		s.anonymous = false;
		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o = s.option(form.ListValue, 'role', _('Role'));
		o.value('inverter', _('Inverter'));
		o.value('meter', _('Site meter'));
		o.value('storage', _('Battery'));
		o = s.option(form.ListValue, 'transport', _('Transport'));
		o.value('tcp', _('Modbus TCP'));
		o.value('rtu', _('Modbus RTU (RS-485)'));
		o = s.option(form.Value, 'host', _('Host'));
		o.datatype = 'host';
		o.depends('transport', 'tcp');
		o = s.option(form.Value, 'port', _('Port'));
		o.datatype = 'port';
		o.placeholder = '502';
		o.depends('transport', 'tcp');
		o.modalonly = true;
		o = s.option(form.Value, 'path', _('Serial port'));
		o.placeholder = '/dev/ttyUSB0';
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
		o = s.option(form.Value, 'unit_id', _('Unit ID'));
		o.datatype = 'range(1,247)';
		o.placeholder = '1';
		o = s.option(form.Value, 'sunspec_base', _('SunSpec base register'), _('Empty: scan 0, 40000 and 50000.'));
		o.datatype = 'range(0,65535)';
		o.modalonly = true;
		o = s.option(form.Value, 'rated_w', _('Rated power (W)'), _('Empty: read from the device.'));
		o.datatype = 'uinteger';
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
		o = s.option(form.Value, 'meter_stale_s', _('Meter staleness timeout (s)'), _('Older meter data puts the site in fail-safe.'));
		o.datatype = 'ufloat';
		o.placeholder = '10';
		o = s.option(form.Value, 'failsafe_export_limit_w', _('Fail-safe export limit (W)'));
		o.datatype = 'uinteger';
		o.placeholder = '0';
		o = s.option(form.Value, 'ramp_up_pct_per_s', _('Ramp up (% of rated power per s)'), _('When the utility gives no ramp rate. Reductions are never ramped.'));
		o.datatype = 'ufloat';
		o.placeholder = '10';

		return m.render();
	}
});
