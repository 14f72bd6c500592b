'use strict';
'require view';
'require poll';
'require rpc';
'require ui';

// `ubus call csipd status`: the daemon's status snapshot (or {"error": "..."}).
var callStatus = rpc.declare({
	object: 'csipd',
	method: 'status',
	expect: { '': {} }
});

// `ubus call csipd cert_info`: the installed certificate, so the LFDI shows even
// before a utility server is set up.
var callCertInfo = rpc.declare({
	object: 'csipd',
	method: 'cert_info',
	expect: { '': {} }
});

// `ubus call csipd validate` with no sections: the saved configuration as the daemon
// would load it on its next reload.
var callValidate = rpc.declare({
	object: 'csipd',
	method: 'validate',
	params: [ 'sections' ],
	expect: { '': {} }
});

var SVG_NS = 'http://www.w3.org/2000/svg';

function watts(v) {
	return v == null ? '–' : Math.round(v) + ' W';
}

function fixed(v, unit, decimals) {
	return v == null ? '–' : v.toFixed(decimals) + ' ' + unit;
}

function pad2(n) {
	return (n < 10 ? '0' : '') + n;
}

// Times are the site's local time: the daemon's UTC offset, not the browser's zone.
var siteOffsetS = 0;

function siteDate(t) {
	return new Date((t + siteOffsetS) * 1000);
}

function hhmm(t) {
	var d = siteDate(t);
	return pad2(d.getUTCHours()) + ':' + pad2(d.getUTCMinutes());
}

function hhmmss(t) {
	return hhmm(t) + ':' + pad2(siteDate(t).getUTCSeconds());
}

// A start or end: "14:35" on the minute, "14:35:21" off it (randomised starts, blocks
// shorter than a minute), as `csipd status` and the built-in page show it: "until
// 14:35" would read as over at 14:35:10.
function offMinute(t) {
	return siteDate(t).getUTCSeconds() != 0;
}

function clock(t) {
	return offMinute(t) ? hhmmss(t) : hhmm(t);
}

// Both bounds of a span alike: seconds on both if either is off the minute.
function clockPair(a, b) {
	var c = (offMinute(a) || offMinute(b)) ? hhmmss : hhmm;
	return [ c(a), c(b) ];
}

// A price per unit (an exact decimal from the daemon): four places, more (up to ten)
// when the utility's multiplier gives more ("0.123456", not "0.1235").
function priceNumber(v) {
	var t = Number(v.toFixed(10));
	return Number(t.toFixed(4)) === t ? t.toFixed(4) : String(t);
}

function duration(s) {
	s = Math.max(0, Math.round(s));
	if (s < 60)
		return s + ' s';
	if (s < 3600)
		return Math.floor(s / 60) + ' min ' + pad2(s % 60) + ' s';
	if (s < 86400)
		return Math.floor(s / 3600) + ' h ' + pad2(Math.floor(s % 3600 / 60)) + ' min';
	return Math.floor(s / 86400) + ' d ' + Math.floor(s % 86400 / 3600) + ' h';
}

function shortMrid(m) {
	return m.length > 8 ? m.slice(0, 8).toLowerCase() + '…' : m.toLowerCase();
}

// Plain words, with the IEEE 2030.5 term where an installer needs it.
function stateText(state) {
	switch (state) {
	case 'polling': return _('Connected: reading the network operator\'s instructions');
	case 'discovering': return _('Connecting to the network operator…');
	case 'offline': return _('Network operator unreachable: keeping the last instructions');
	case 'pin_mismatch': return _('Registration PIN does not match the network operator\'s: not acting on its instructions');
	case 'not_registered': return _('Not registered with the network operator yet (EndDevice not found)');
	case 'not_configured': return _('Not set up: no network operator server address');
	default: return state;
	}
}

function modeText(mode) {
	switch (mode) {
	case 'export': return _('Export limit') + ' (opModExpLimW)';
	case 'import': return _('Import limit') + ' (opModImpLimW)';
	case 'generation': return _('Generation limit') + ' (opModGenLimW)';
	case 'load': return _('Load limit') + ' (opModLoadLimW)';
	case 'connect': return _('Connection') + ' (opModConnect)';
	default: return mode;
	}
}

function roleText(role) {
	switch (role) {
	case 'meter': return _('Site meter');
	case 'inverter': return _('Solar inverter');
	case 'storage': return _('Battery');
	default: return role;
	}
}

function sourceText(src) {
	switch (src.kind) {
	case 'utility_event': return _('Network operator event') + ' (DERControl ' + shortMrid(src.mrid) + ')';
	case 'program_default': return _('Network operator standing limit') + ' (DefaultDERControl' + (src.program ? ', ' + src.program : '') + ')';
	case 'fixed': return _('Your fixed limit');
	case 'tariff': return _('Your tariff window') + (src.name ? ' ' + src.name : '');
	case 'price': return _('Negative feed-in price');
	case 'fail_safe':
		switch (src.cause) {
		case 'no_meter': return _('No site meter set up: the inverters\' output is held at this level');
		case 'meter_not_read': return _('Safety limit: no meter reading yet');
		default: return _('Safety limit: meter not answering');
		}
	case 'fallback':
		return src.cause === 'no_utility_export_limit'
			? _('Fallback export limit: the network operator sets no export limit')
			: _('Fallback export limit: no network operator limit received yet');
	default: return src.kind;
	}
}

function errorSource(source) {
	var m = /^device (.*)$/.exec(source);
	if (m)
		return _('Device “%s”').format(m[1]);
	switch (source) {
	case 'csip': return _('Network operator connection');
	case 'price': return _('Feed-in price');
	case 'store': return _('Storage on the router');
	case 'mqtt': return _('MQTT publishing');
	default: return source;
	}
}

function limitValue(l) {
	if (l.mode == 'connect')
		return l.connect ? _('Stay connected') : _('Switched off (cease to energize)');
	return watts(l.value_w) + (l.unsupported ? ' (' + _('not possible here: no controllable battery') + ')' : '');
}

// A limit in force that a device cannot act on (`not_enforceable`, "not enforceable:
// pv has no control model") is said to be not enforced, with why: never shown as kept.
function limitCell(l) {
	if (!l.not_enforceable)
		return limitValue(l);
	var why = l.not_enforceable.replace(/^not enforceable:\s*/, '');
	return E('span', { 'class': 'csipd-not-enforced' }, [
		limitValue(l), ' — ',
		E('strong', { 'style': 'color:#c00' }, [ _('NOT enforced') ]), ': ', why
	]);
}

// DERControlResponse status (IEEE 2030.5 Table 27) in words, its code beside it.
var RESPONSE_STATUS = {
	Received: [ 1, _('Received') ],
	Started: [ 2, _('Started') ],
	Completed: [ 3, _('Completed') ],
	Cancelled: [ 6, _('Cancelled by the network operator') ],
	Superseded: [ 7, _('Replaced by a newer instruction') ],
	RejectedNotApplicable: [ 252, _('Refused: not applicable to this site') ],
	RejectedInvalid: [ 253, _('Refused: invalid instruction') ],
	RejectedExpired: [ 254, _('Refused: arrived after it had ended') ]
};

function responseText(status) {
	var s = RESPONSE_STATUS[status];
	return s ? s[1] + ' (' + s[0] + ')' : String(status);
}

function deliveryText(d) {
	switch (d) {
	case 'accepted': return _('accepted');
	case 'refused': return _('refused by the server (not sent again)');
	case 'retry_later': return _('not delivered yet: will be sent again');
	default: return d;
	}
}

// What a device lets csipd do, and the certificate pinned for a device reached over
// TLS (a Powerwall gateway).
function deviceNotes(d) {
	var notes = [];
	if (d.read_only)
		notes.push(E('div', { 'class': 'csipd-read-only' }, [
			E('strong', {}, [ /control model/.test(d.read_only) ? _('read only (no control model)') : _('read only') ]),
			': ', d.read_only
		]));
	if (d.tls_fingerprint)
		notes.push(E('div', { 'class': 'csipd-fingerprint' }, [
			_('Certificate (pinned): '), E('code', { 'style': 'word-break:break-all' }, [ d.tls_fingerprint ])
		]));
	return notes.length ? E('div', {}, notes) : '–';
}

function svgEl(tag, attrs, text) {
	var e = document.createElementNS(SVG_NS, tag);
	for (var k in attrs)
		e.setAttribute(k, attrs[k]);
	if (text != null)
		e.textContent = text;
	return e;
}

// Export against the export limit over the history window, as an SVG sized to the
// space it has, so its text stays readable on a phone. Gaps (no meter reading, no
// limit in force) are gaps, never a line at 0 W.
function drawChart(svg, s, width) {
	var h = s.history, W = Math.max(300, Math.min(900, Math.round(width))), H = 220, L = 58, R = 8, T = 10, B = 24;
	var t1 = s.now_unix_s, t0 = t1 - (h.window_s || 3600), max = 100;

	svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
	while (svg.firstChild)
		svg.removeChild(svg.firstChild);

	h.points.forEach(function(p) {
		if (p.export_w != null) max = Math.max(max, p.export_w);
		if (p.export_limit_w != null) max = Math.max(max, p.export_limit_w);
	});
	max *= 1.1;

	function x(t) { return L + (t - t0) / (t1 - t0) * (W - L - R); }
	function y(v) { return T + (1 - v / max) * (H - T - B); }

	for (var i = 0; i <= 4; i++) {
		var v = max * i / 4;
		svg.appendChild(svgEl('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#ddd' }));
		svg.appendChild(svgEl('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 12 }, Math.round(v) + ' W'));
	}
	svg.appendChild(svgEl('text', { x: L, y: H - 6, 'font-size': 12 }, '−60 min'));
	svg.appendChild(svgEl('text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 12 }, _('now')));

	function line(key, color, step, cls) {
		var segments = [], pts = [], prev = null;
		h.points.forEach(function(p) {
			if (p.t_unix_s < t0)
				return;
			if (p[key] == null) {
				if (pts.length) segments.push(pts);
				pts = [];
				prev = null;
				return;
			}
			if (step && prev != null)
				pts.push(x(p.t_unix_s).toFixed(1) + ',' + y(prev).toFixed(1));
			pts.push(x(p.t_unix_s).toFixed(1) + ',' + y(p[key]).toFixed(1));
			prev = p[key];
		});
		if (pts.length) segments.push(pts);
		segments.forEach(function(seg) {
			svg.appendChild(svgEl('polyline', { 'class': cls, points: seg.join(' '), fill: 'none', stroke: color, 'stroke-width': 2 }));
		});
	}

	line('export_limit_w', '#d62728', true, 'csipd-limit-line');
	line('export_w', '#1f77b4', false, 'csipd-export-line');
}

// A LuCI table whose cells carry their column title in data-title: LuCI's themes hide
// the header row on narrow screens and show each cell's title beside its value.
function table(headers, rows, empty) {
	var t = E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, headers.map(function(h) {
			return E('th', { 'class': 'th' }, [ h ]);
		}))
	]);
	if (!rows.length)
		t.appendChild(E('tr', { 'class': 'tr placeholder' }, [ E('td', { 'class': 'td' }, [ E('em', {}, [ empty ]) ]) ]));
	rows.forEach(function(r) {
		t.appendChild(E('tr', { 'class': 'tr' }, r.map(function(c, i) {
			return E('td', { 'class': 'td', 'data-title': headers[i] }, [ c ]);
		})));
	});
	return t;
}

// 2030.5 prices are a cost to the customer (negative: a credit): say who pays.
function currencyName(c) {
	return { 36: 'AUD', 554: 'NZD', 840: 'USD', 978: 'EUR', 826: 'GBP' }[c] || _('currency units');
}

function priceText(p, point) {
	if (!point.blocks.length)
		return _('price not read yet');
	var unit = currencyName(p.currency) + '/' + p.unit;
	return point.blocks.map(function(b) {
		var v = b.price_per_unit;
		var t = v > 0 ? _('you pay %s').format(priceNumber(v) + ' ' + unit)
			: v < 0 ? _('you get %s').format(priceNumber(-v) + ' ' + unit) : '0.0000 ' + unit;
		return b.start_value ? t + ' ' + _('from %s').format(b.start_value + ' ' + p.unit) : t;
	}).join(' / ');
}

function directionText(d) {
	switch (d) {
	case 'import': return _('Energy you buy (import)');
	case 'export': return _('Energy you sell (export)');
	default: return _('Other');
	}
}

function countdown(end) {
	return E('span', { 'data-end': end }, [ clock(end) ]);
}

return view.extend({
	load: function() {
		return Promise.all([
			callStatus(),
			L.resolveDefault(callCertInfo(), {}),
			L.resolveDefault(callValidate(), {})
		]);
	},

	skewS: 0,
	box: null,
	certInfo: {},
	configCheck: {},

	update: function(s) {
		var box = this.box;
		if (!s || s.error) {
			box.replaceChildren(E('div', { 'class': 'alert-message warning' }, [
				_('csipd is not answering: %s').format(s && s.error ? s.error : _('no answer'))
			]));
			return;
		}
		siteOffsetS = s.local_utc_offset_s || 0;
		this.skewS = s.now_unix_s - Date.now() / 1000;
		var u = s.utility, now = s.now_unix_s;
		var cert = (this.certInfo && this.certInfo.certificate) || {};
		var lfdi = u.lfdi || cert.lfdi, sfdi = u.sfdi != null ? u.sfdi : cert.sfdi;

		var meter = s.devices.filter(function(d) { return d.role == 'meter'; })[0];
		var meterFresh = meter && !meter.stale;

		var children = [
			E('p', { 'class': 'csipd-summary', 'style': 'font-size:1.25em;font-weight:bold;padding:.6em .8em;border-left:4px solid #1f77b4;background:rgba(31,119,180,.08)' }, [ s.summary || '' ])
		];
		var check = this.configCheck || {};
		if (check.valid === false)
			children.push(E('div', { 'class': 'alert-message warning' }, [
				_('The saved settings have errors, so csipd keeps running its last good settings. Fix them on the Settings page: '),
				(check.errors || []).map(function(e) { return e.message; }).join('; ')
			]));

		var utility = table([ _('Network operator'), _('Since'), _('Server'), _('Device ID (LFDI)'), _('Short ID (SFDI)'), _('Clock difference'), _('Readings posted') ], [[
			E('strong', {}, [ stateText(u.state) ]),
			E('span', { 'data-since': u.since_unix_s }, [ hhmm(u.since_unix_s) ]),
			u.server_url ? E('span', {}, [
				E('code', { 'style': 'word-break:break-all' }, [ u.server_url ]),
				u.csipaus_version ? E('span', { 'class': 'csipd-csipaus-version' }, [ ' (CSIP-AUS ' + u.csipaus_version + ')' ]) : ''
			]) : _('none set up'),
			E('code', { 'style': 'word-break:break-all' }, [ lfdi || _('no certificate installed') ]),
			sfdi == null ? '–' : String(sfdi),
			u.clock_offset_s == null ? '–' : (u.clock_offset_s >= 0 ? '+' : '') + u.clock_offset_s.toFixed(1) + ' s',
			// MirrorMeterReadings the utility accepted, and those still waiting to go.
			String(u.readings_posted || 0) + (u.readings_pending ? ' ' + _('(%d waiting)').format(u.readings_pending) : '')
		]], '');

		var limits = table([ _('Limit'), _('Value'), _('Set by'), _('Until') ], s.limits.map(function(l) {
			return [ modeText(l.mode), limitCell(l), sourceText(l.source), l.end_unix_s == null ? _('until further notice') : countdown(l.end_unix_s) ];
		}), _('No limits in force'));

		var prices = table([ _('Energy'), _('Price now'), _('Next price') ], (u.prices || []).map(function(p) {
			return [ directionText(p.direction),
				p.current ? priceText(p, p.current) + ' ' + _('until %s').format(clock(p.current.end_unix_s)) : _('no price now'),
				p.next ? priceText(p, p.next) + ', ' + clockPair(p.next.start_unix_s, p.next.end_unix_s).join('–') : '–' ];
		}), _('No tariff from the network operator'));

		var upcoming = table([ _('Starts'), _('Ends'), _('Limits'), _('Event') ], s.upcoming_events.map(function(e) {
			var bounds = clockPair(e.start_unix_s, e.end_unix_s);
			return [ bounds[0], bounds[1],
				e.limits.map(function(l) { return modeText(l.mode) + ' ' + limitValue(l); }).join(', '), shortMrid(e.mrid) ];
		}), _('None scheduled'));

		// Old numbers are never shown as live: with the meter stale or missing, the
		// figures that need it say why; solar is the inverters' own output, known
		// without the meter (as `csipd status` and the built-in page say).
		var siteHeaders = [ _('Grid (import +, export −)'), _('Export'), _('Solar'), _('Household use') ];
		var noMeter = !meter ? _('not measured (no site meter)')
			: meter.last_reading_age_s == null ? _('unknown (no meter reading yet)') : _('unknown (meter not answering)');
		var solar = s.site.pv_w == null ? _('unknown (no inverter reading)')
			: watts(s.site.pv_w) + (meterFresh ? '' : ' ' + _('(from the inverters)'));
		var site = table(siteHeaders, [ meterFresh
			? [ watts(s.site.site_w), watts(s.site.export_w), solar, s.site.load_w == null ? _('unknown') : watts(s.site.load_w) ]
			: [ noMeter, noMeter, solar, noMeter ] ], '');
		if (!meterFresh)
			site = E('div', {}, [ site, E('div', { 'class': 'alert-message warning csipd-site-stale' }, [
				meter ? _('The site meter is not answering (last reading %s ago), so the site\'s power is unknown. csipd holds the safety limit until it answers again.')
						.format(meter.last_reading_age_s == null ? _('never') : duration(meter.last_reading_age_s))
					: _('No site meter is set up, so the grid, export and household use are not measured; solar is the inverters\' own output.')
			]) ]);

		var devices = table([ _('Device'), _('Type'), _('Power'), _('Reactive power'), _('Voltage'), _('Frequency'), _('Last reading'), _('Notes') ], s.devices.map(function(d) {
			var r = d.readings, st = d.stale;
			function v(text) { return st ? E('span', { 'style': 'color:#888;text-decoration:line-through' }, [ text ]) : text; }
			return [ d.name, roleText(d.role), v(watts(r.w)), v(fixed(r['var'], 'var', 0)), v(fixed(r.v, 'V', 1)), v(fixed(r.hz, 'Hz', 2)),
				st ? E('strong', { 'style': 'color:#c00' }, [ _('stale') + (d.last_reading_age_s == null ? '' : ' (' + duration(d.last_reading_age_s) + ' ' + _('ago') + ')') ])
					: (d.last_reading_age_s == null ? _('never') : duration(d.last_reading_age_s) + ' ' + _('ago')),
				deviceNotes(d) ];
		}), _('No devices set up'));

		// The latest answers sent to the network operator (DERControlResponse), newest first.
		var responses = table([ _('Sent at'), _('Instruction'), _('Answer'), _('Delivery') ], (s.responses || []).slice().reverse().slice(0, 10).map(function(r) {
			return [ hhmmss(r.at_unix_s), 'DERControl ' + shortMrid(r.mrid), responseText(r.status), deliveryText(r.delivery) ];
		}), _('None sent yet'));

		var setpoints = table([ _('Inverter'), _('Output limit written'), _('Written at') ], s.setpoints.map(function(p) {
			var lim = p.limit_w == null ? _('not limited')
				: watts(p.limit_w) + (p.limit_pct == null ? '' : ' (' + p.limit_pct.toFixed(1) + ' %)');
			if (p.connect === false)
				lim += ', ' + _('switched off');
			if (p.charge_limit_w != null)
				lim += ', ' + _('charge ≤ %s').format(watts(p.charge_limit_w));
			return [ p.device, lim, p.written_unix_s == null ? '–' : hhmmss(p.written_unix_s) ];
		}), _('Nothing written yet'));

		var errors = table([ _('Last seen'), _('Where'), _('Problem') ], s.last_errors.slice().reverse().slice(0, 10).map(function(e) {
			return [ hhmmss(e.t_unix_s), errorSource(e.source), e.message + (e.count > 1 ? ' ' + _('(%d times)').format(e.count) : '') ];
		}), _('None'));

		var chart = svgEl('svg', { width: '100%', role: 'img', 'aria-label': _('Export against the export limit, last hour') });
		drawChart(chart, s, box.clientWidth || window.innerWidth || 720);

		children.push(E('h3', {}, [ _('Network operator (utility server)') ]), utility);
		if (u.registration_problem)
			children.push(E('div', { 'class': 'alert-message warning' }, [ _('Registration problem: ') + u.registration_problem ]));
		children.push(
			E('h3', {}, [ _('Limits in force') ]), limits,
			E('h3', {}, [ _('Prices from the network operator') ]), prices,
			E('h3', {}, [ _('Coming up') ]), upcoming,
			E('h3', {}, [ _('Site') ]), site,
			E('h3', {}, [ _('Export against the export limit, last hour') ]),
			E('div', {}, [
				E('span', { 'style': 'color:#1f77b4' }, [ '▬ ' + _('export') ]), ' ',
				E('span', { 'style': 'color:#d62728' }, [ '▬ ' + _('export limit') ])
			]),
			chart,
			E('h3', {}, [ _('Devices') ]), devices,
			E('h3', {}, [ _('Inverter settings written by csipd') ]), setpoints,
			E('h3', {}, [ _('Answers sent to the network operator') ]), responses,
			E('h3', {}, [ _('Recent problems') ]), errors
		);
		box.replaceChildren.apply(box, children);
		this.tick();
	},

	// Countdowns move every second between polls, against the daemon's clock.
	tick: function() {
		var now = Date.now() / 1000 + this.skewS;
		this.box.querySelectorAll('[data-end]').forEach(function(e) {
			var end = +e.getAttribute('data-end');
			e.textContent = clock(end) + ' (' + _('in') + ' ' + duration(end - now) + ')';
		});
		this.box.querySelectorAll('[data-since]').forEach(function(e) {
			var since = +e.getAttribute('data-since');
			e.textContent = hhmm(since) + ' (' + duration(now - since) + ')';
		});
	},

	render: function(data) {
		var self = this;
		this.certInfo = data[1] || {};
		this.configCheck = data[2] || {};
		this.box = E('div', { 'id': 'csipd-status' }, [ E('em', {}, [ _('Loading…') ]) ]);
		this.update(data[0]);
		poll.add(function() {
			return callStatus().then(function(s) { self.update(s); }, function(err) {
				self.update({ error: err && err.message ? err.message : String(err) });
			});
		}, 5);
		window.setInterval(function() { self.tick(); }, 1000);
		return E('div', { 'class': 'cbi-map' }, [
			E('h2', {}, [ _('Dynamic connection (csipd)') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('What the network operator asks of this site right now, and what csipd does about it.')
			]),
			this.box
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
