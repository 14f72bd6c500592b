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

function hhmm(t) {
	var d = new Date(t * 1000);
	return pad2(d.getHours()) + ':' + pad2(d.getMinutes());
}

function hhmmss(t) {
	return hhmm(t) + ':' + pad2(new Date(t * 1000).getSeconds());
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

function sourceText(src) {
	switch (src.kind) {
	case 'utility_event': return _('utility event') + ' ' + shortMrid(src.mrid);
	case 'program_default': return _('program default') + (src.program ? ' (' + src.program + ')' : '');
	case 'fixed': return _('fixed limit');
	case 'tariff': return _('tariff window') + (src.name ? ' ' + src.name : '');
	case 'price': return _('negative feed-in price');
	case 'fail_safe': return _('fail-safe (meter data stale)');
	default: return src.kind;
	}
}

function limitValue(l) {
	if (l.mode == 'connect')
		return l.connect ? _('connected') : _('cease to energize');
	return watts(l.value_w) + (l.unsupported ? ' (' + _('not supported: no controllable battery') + ')' : '');
}

function svgEl(tag, attrs, text) {
	var e = document.createElementNS(SVG_NS, tag);
	for (var k in attrs)
		e.setAttribute(k, attrs[k]);
	if (text != null)
		e.textContent = text;
	return e;
}

// Export against the export limit over the history window, as an SVG (no libraries).
function drawChart(svg, s) {
	var h = s.history, W = 720, H = 220, L = 60, R = 8, T = 8, B = 22;
	var t1 = s.now_unix_s, t0 = t1 - (h.window_s || 3600), max = 100;

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
		svg.appendChild(svgEl('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11 }, Math.round(v) + ' W'));
	}
	svg.appendChild(svgEl('text', { x: L, y: H - 6, 'font-size': 11 }, '−60 min'));
	svg.appendChild(svgEl('text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 11 }, _('now')));

	function line(key, color, step) {
		var pts = [], prev = null;
		h.points.forEach(function(p) {
			if (p.t_unix_s < t0 || p[key] == null)
				return;
			if (step && prev != null)
				pts.push(x(p.t_unix_s).toFixed(1) + ',' + y(prev).toFixed(1));
			pts.push(x(p.t_unix_s).toFixed(1) + ',' + y(p[key]).toFixed(1));
			prev = p[key];
		});
		if (pts.length)
			svg.appendChild(svgEl('polyline', { points: pts.join(' '), fill: 'none', stroke: color, 'stroke-width': 2 }));
	}

	line('export_limit_w', '#d62728', true);
	line('export_w', '#1f77b4', false);
}

function table(headers, rows, empty) {
	var t = E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, headers.map(function(h) {
			return E('th', { 'class': 'th' }, [ h ]);
		}))
	]);
	if (!rows.length)
		rows = [ [ E('em', {}, [ empty ]) ] ];
	rows.forEach(function(r) {
		t.appendChild(E('tr', { 'class': 'tr' }, r.map(function(c) {
			return E('td', { 'class': 'td' }, [ c ]);
		})));
	});
	return t;
}

function countdown(end) {
	return E('span', { 'data-end': end }, [ hhmm(end) ]);
}

return view.extend({
	load: function() {
		return callStatus();
	},

	skewS: 0,
	box: null,

	update: function(s) {
		var box = this.box;
		if (!s || s.error) {
			box.replaceChildren(E('div', { 'class': 'alert-message warning' }, [
				s && s.error ? s.error : _('No answer from csipd.')
			]));
			return;
		}
		this.skewS = s.now_unix_s - Date.now() / 1000;
		var u = s.utility;

		var utility = table([ _('Connection'), _('Since'), _('LFDI'), _('SFDI'), _('Clock offset') ], [[
			E('strong', {}, [ u.state ]),
			E('span', { 'data-since': u.since_unix_s }, [ hhmm(u.since_unix_s) ]),
			E('code', {}, [ u.lfdi || _('no certificate') ]),
			u.sfdi == null ? '–' : String(u.sfdi),
			u.clock_offset_s == null ? '–' : (u.clock_offset_s >= 0 ? '+' : '') + u.clock_offset_s.toFixed(1) + ' s'
		]], '');

		var limits = table([ _('Mode'), _('Limit'), _('Source'), _('Until') ], s.limits.map(function(l) {
			return [ l.mode, limitValue(l), sourceText(l.source), l.end_unix_s == null ? '–' : countdown(l.end_unix_s) ];
		}), _('No limits in force'));

		var upcoming = table([ _('Starts'), _('Ends'), _('Limits'), _('Event') ], s.upcoming_events.map(function(e) {
			return [ hhmm(e.start_unix_s), hhmm(e.end_unix_s),
				e.limits.map(function(l) { return l.mode + ' ' + limitValue(l); }).join(', '), shortMrid(e.mrid) ];
		}), _('None scheduled'));

		var site = table([ _('Grid (import +)'), _('Export'), _('PV'), _('Load') ], [[
			watts(s.site.site_w), watts(s.site.export_w), watts(s.site.pv_w), watts(s.site.load_w)
		]], '');

		var devices = table([ _('Device'), _('Role'), 'W', 'var', 'V', 'Hz', _('Last reading') ], s.devices.map(function(d) {
			var r = d.readings;
			return [ d.name, d.role, watts(r.w), fixed(r['var'], 'var', 0), fixed(r.v, 'V', 1), fixed(r.hz, 'Hz', 2),
				d.stale ? E('strong', { 'style': 'color:#c00' }, [ _('stale') ])
					: (d.last_reading_age_s == null ? _('never') : duration(d.last_reading_age_s) + ' ' + _('ago')) ];
		}), _('No devices'));

		var setpoints = table([ _('Inverter'), _('Limit'), _('Written') ], s.setpoints.map(function(p) {
			var lim = p.limit_w == null ? _('uncurtailed')
				: watts(p.limit_w) + (p.limit_pct == null ? '' : ' (' + p.limit_pct.toFixed(1) + ' %)');
			if (p.connect === false)
				lim += ', ' + _('ceased to energize');
			if (p.charge_limit_w != null)
				lim += ', ' + _('charge ≤ %s').format(watts(p.charge_limit_w));
			return [ p.device, lim, p.written_unix_s == null ? '–' : hhmmss(p.written_unix_s) ];
		}), _('No setpoints written yet'));

		var errors = table([ _('Time'), _('Where'), _('Error') ], s.last_errors.slice().reverse().slice(0, 10).map(function(e) {
			return [ hhmmss(e.t_unix_s), e.source, e.message ];
		}), _('None'));

		var chart = svgEl('svg', { viewBox: '0 0 720 220', width: '100%', role: 'img' });
		drawChart(chart, s);

		var children = [
			E('h3', {}, [ _('Utility') ]), utility
		];
		if (u.registration_problem)
			children.push(E('div', { 'class': 'alert-message warning' }, [ _('Registration problem: ') + u.registration_problem ]));
		children.push(
			E('h3', {}, [ _('Active limits') ]), limits,
			E('h3', {}, [ _('Upcoming events') ]), upcoming,
			E('h3', {}, [ _('Site') ]), site,
			E('h3', {}, [ _('Export against the export limit, last hour') ]),
			E('div', {}, [
				E('span', { 'style': 'color:#1f77b4' }, [ '▬ ' + _('export W') ]), ' ',
				E('span', { 'style': 'color:#d62728' }, [ '▬ ' + _('export limit W') ])
			]),
			chart,
			E('h3', {}, [ _('Devices') ]), devices,
			E('h3', {}, [ _('Inverter setpoints') ]), setpoints,
			E('h3', {}, [ _('Recent errors') ]), errors
		);
		box.replaceChildren.apply(box, children);
		this.tick();
	},

	// Countdowns move every second between polls, against the daemon's clock.
	tick: function() {
		var now = Date.now() / 1000 + this.skewS;
		this.box.querySelectorAll('[data-end]').forEach(function(e) {
			var end = +e.getAttribute('data-end');
			e.textContent = hhmm(end) + ' (' + _('in') + ' ' + duration(end - now) + ')';
		});
		this.box.querySelectorAll('[data-since]').forEach(function(e) {
			var since = +e.getAttribute('data-since');
			e.textContent = hhmm(since) + ' (' + duration(now - since) + ')';
		});
	},

	render: function(status) {
		var self = this;
		this.box = E('div', { 'id': 'csipd-status' }, [ E('em', {}, [ _('Loading…') ]) ]);
		this.update(status);
		poll.add(function() {
			return callStatus().then(function(s) { self.update(s); }, function(err) {
				ui.addNotification(null, E('p', {}, [ _('Cannot read the csipd status: ') + err ]));
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
