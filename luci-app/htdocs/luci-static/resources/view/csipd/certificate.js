'use strict';
'require view';
'require rpc';
'require ui';

// Certificate onboarding: make the key and request, send the request to the
// manufacturer's or network operator's certificate authority, install the signed
// certificate (with its manufacturer/MICA chain) and the operator's CA bundle. csipd
// reloads when they change. Every method answers {"error": "..."} on failure.

// `cert_info`: paths, the next step, the installed certificate (LFDI, SFDI, key match,
// chain, expiry) and the CA bundle.
var callCertInfo = rpc.declare({
	object: 'csipd',
	method: 'cert_info',
	expect: { '': {} }
});

// `cert_request {cn}`: a new (or the existing) key, mode 0600, and a request.
var callCertRequest = rpc.declare({
	object: 'csipd',
	method: 'cert_request',
	params: [ 'cn' ],
	expect: { '': {} }
});

// `cert_csr`: the stored request, to show and download again.
var callCertCsr = rpc.declare({
	object: 'csipd',
	method: 'cert_csr',
	expect: { '': {} }
});

// `cert_install {cert, ca}`: checks and installs, then reloads csipd.
var callCertInstall = rpc.declare({
	object: 'csipd',
	method: 'cert_install',
	params: [ 'cert', 'ca' ],
	expect: { '': {} }
});

// `status`: the running daemon's view of its identity.
var callStatus = rpc.declare({
	object: 'csipd',
	method: 'status',
	expect: { '': {} }
});

// What the page says about where onboarding stands (cert_info's step).
var STEPS = {
	make_key: _('Step 1 of 3: make the key and certificate request.'),
	send_request: _('Step 1 of 3: make the key and certificate request.'),
	install_certificate: _('Step 2 of 3: send the request to be signed, then install the signed certificate.'),
	install_ca: _('Step 3 of 3: install the network operator\'s CA bundle (if they gave you one).'),
	done: _('The certificate is installed.')
};
// An rpc failure in words (never a raw RPCError stack).
function failure(err) {
	var msg = err && err.message ? err.message : String(err);
	if (/Permission|Access denied|-32002/.test(msg))
		return _('You are not allowed to change the certificate. Ask the router\'s administrator.');
	return _('csipd did not answer: %s').format(msg.split('\n')[0]);
}

// A label/value row. The label is its own cell, so LuCI's narrow layout (cells stacked)
// still shows it above the value; no data-title, which would repeat it.
function row(label, value, attrs) {
	return E('tr', Object.assign({ 'class': 'tr' }, attrs || {}), [
		E('td', { 'class': 'td left', 'style': 'width:33%' }, [ E('strong', {}, [ label ]) ]),
		E('td', { 'class': 'td left', 'data-field': label }, [ value ])
	]);
}

function note(kind, text) {
	return E('div', { 'class': 'alert-message ' + kind }, [ text ]);
}

function download(name, text) {
	var a = E('a', {
		'href': 'data:application/pkcs10;charset=utf-8,' + encodeURIComponent(text),
		'download': name,
		'style': 'display:none'
	});
	document.body.appendChild(a);
	a.click();
	document.body.removeChild(a);
}

// The text of a chosen file, or of the paste box when no file was chosen.
function readInput(fileInput, textArea) {
	var file = fileInput.files && fileInput.files[0];
	if (!file)
		return Promise.resolve(textArea.value.trim());
	return new Promise(function(resolve, reject) {
		var r = new FileReader();
		r.onload = function() { resolve(String(r.result).trim()); };
		r.onerror = function() { reject(new Error(_('cannot read %s').format(file.name))); };
		r.readAsText(file);
	});
}

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(callCertInfo(), { error: _('csipd did not answer') }),
			L.resolveDefault(callStatus(), {}),
			L.resolveDefault(callCertCsr(), {})
		]);
	},

	writable: function() {
		// LuCI knows whether this user's ACL allows changes on this page.
		return typeof L.hasViewPermission != 'function' || L.hasViewPermission() !== false;
	},

	showCsr: function(res, out) {
		out = out || document.getElementById('csipd-csr');
		if (!out)
			return;
		if (!res || res.error || !res.csr) {
			out.replaceChildren();
			return;
		}
		var area = E('textarea', { 'id': 'csipd-csr-text', 'readonly': 'readonly', 'rows': 9, 'style': 'width:100%;font-family:monospace;font-size:12px' }, [ res.csr ]);
		out.replaceChildren(
			E('p', {}, [ _('Certificate request (CSR) for %s, saved as ').format(res.subject || ''), E('code', {}, [ res.csr_path ]),
				'. ', _('Send it to your inverter manufacturer or network operator to be signed. The private key stays on this router.') ]),
			area,
			E('div', {}, [
				E('button', { 'class': 'cbi-button', 'click': function() {
					area.select();
					if (navigator.clipboard)
						navigator.clipboard.writeText(res.csr);
					else
						document.execCommand('copy');
				} }, [ _('Copy') ]), ' ',
				E('button', { 'class': 'cbi-button', 'id': 'csipd-csr-download', 'click': function() { download(res.file_name || 'csipd.csr', res.csr); } }, [ _('Download %s').format(res.file_name || 'csipd.csr') ])
			])
		);
	},

	handleRequest: function(ev) {
		var self = this;
		var cn = document.getElementById('csipd-cn').value.trim();
		var msg = document.getElementById('csipd-request-msg');
		if (!cn) {
			msg.replaceChildren(note('warning', _('Enter the name the certificate should carry (the network operator or manufacturer tells you which: often the site\'s NMI or the router\'s serial number).')));
			return Promise.resolve();
		}
		return callCertRequest(cn).then(function(res) {
			if (res.error) {
				msg.replaceChildren(note('warning', res.error));
				return;
			}
			msg.replaceChildren(note('notice', res.key_created
				? _('New private key made at %s.').format(res.key_path)
				: _('The existing private key at %s was used.').format(res.key_path)));
			return callCertCsr().then(function(csr) { self.showCsr(csr); });
		}, function(err) {
			msg.replaceChildren(note('warning', failure(err)));
		});
	},

	handleInstall: function(ev) {
		var self = this;
		var msg = document.getElementById('csipd-install-msg');
		return Promise.all([
			readInput(document.getElementById('csipd-cert-file'), document.getElementById('csipd-cert-text')),
			readInput(document.getElementById('csipd-ca-file'), document.getElementById('csipd-ca-text'))
		]).then(function(texts) {
			if (!texts[0] && !texts[1]) {
				msg.replaceChildren(note('warning', _('Choose or paste the signed certificate, the CA bundle, or both.')));
				return;
			}
			return callCertInstall(texts[0], texts[1]).then(function(res) {
				if (res.error) {
					msg.replaceChildren(note('warning', res.error));
					return;
				}
				var done = _('Installed: %s.').format((res.installed || []).join(', '));
				var reload = res.reload || {};
				msg.replaceChildren(note(reload.ok ? 'notice' : 'warning',
					done + ' ' + (reload.ok ? _('csipd was reloaded and uses it now.') : _('csipd could not be reloaded: %s').format(reload.message || ''))));
				// The answer is the new cert_info: show the installed identity in place.
				var table = document.getElementById('csipd-identity');
				if (table)
					table.parentNode.replaceChild(self.renderIdentity(res, {}), table);
				var step = document.getElementById('csipd-step');
				if (step)
					step.replaceChildren(E('strong', {}, [ STEPS[res.step] || '' ]));
			});
		}).catch(function(err) {
			msg.replaceChildren(note('warning', failure(err)));
		});
	},

	renderIdentity: function(info, status) {
		var c = info.certificate, rows = [];
		var u = status.utility || {};
		if (c && !c.problem) {
			var expiry = c.not_after + ' (' + (c.expired ? _('expired')
				: _('%d days left').format(c.days_left)) + ')';
			rows.push(
				row(_('Device ID (LFDI)'), E('code', { 'style': 'word-break:break-all' }, [ c.lfdi ])),
				row(_('Short ID (SFDI)'), E('code', {}, [ String(c.sfdi) ])),
				row(_('Name (subject)'), c.subject),
				row(_('Signed by (issuer)'), c.issuer),
				row(_('Valid until'), (c.expired || c.expires_soon)
					? E('strong', { 'style': 'color:#c00' }, [ expiry ]) : expiry, { 'id': 'csipd-expiry' }),
				row(_('Matches this router\'s key'), c.key_matches === true ? _('yes')
					: E('strong', { 'style': 'color:#c00' }, [ c.key_matches === false ? _('no: this certificate is for another key') : _('no key on this router') ])),
				row(_('Certificate chain'), E('ol', { 'style': 'margin:0' }, c.chain.map(function(l) {
					var ok = l.verified_by_next === true ? '✓ ' : (l.verified_by_next === false ? '✗ ' : '');
					return E('li', {}, [ ok + l.subject + ' — ' + _('valid until %s').format(l.not_after) ]);
				})))
			);
		}
		else if (u.lfdi) {
			rows.push(row(_('Device ID (LFDI)'), E('code', {}, [ u.lfdi ])),
				row(_('Short ID (SFDI)'), E('code', {}, [ String(u.sfdi) ])));
		}
		var ca = info.ca && info.ca.certs;
		rows.push(row(_('Network operator CA bundle'), ca && ca.length
			? ca.map(function(x) { return x.subject; }).join('; ')
			: _('not installed (the router\'s system trust store is used)')));
		return E('table', { 'class': 'table', 'id': 'csipd-identity' }, rows);
	},

	render: function(data) {
		var info = data[0] || {}, status = data[1] || {}, csr = data[2] || {};
		var writable = this.writable();
		var csrBox = E('div', { 'id': 'csipd-csr', 'style': 'margin-top:1em' });
		// The stored request is shown again after a reload, ready to copy or download.
		this.showCsr(csr, csrBox);
		var c = info.certificate;
		var warnings = (info.problems || []).map(function(p) { return note('warning', p); });
		if (c && c.expires_soon && !c.expired)
			warnings.push(note('warning', _('The certificate expires in %d days. Make a new request and install the new certificate before then.').format(c.days_left)));



		var body = [
			E('h2', {}, [ _('Certificate') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('The network operator recognises this router by its client certificate (IEEE 2030.5 device certificate). Give them the Device ID (LFDI) and Short ID (SFDI) when you register the site.')
			]),
			info.error ? note('warning', info.error) : E('p', { 'id': 'csipd-step' }, [ E('strong', {}, [ STEPS[info.step] || '' ]) ])
		].concat(warnings, [ this.renderIdentity(info, status) ]);

		if (!writable) {
			body.push(note('notice', _('You can look at the certificate here; changing it needs an administrator.')));
			body.push(csrBox);
		}
		else {
			body.push(
				E('h3', {}, [ _('1. Key and certificate request') ]),
				E('p', {}, [ _('The private key is kept at %s; the request is saved at %s.').format(info.key_path || '?', info.csr_path || '?') ]),
				E('div', { 'class': 'cbi-value' }, [
					E('label', { 'class': 'cbi-value-title', 'for': 'csipd-cn' }, [ _('Name on the certificate (CN)') ]),
					E('div', { 'class': 'cbi-value-field' }, [
						E('input', { 'id': 'csipd-cn', 'type': 'text', 'class': 'cbi-input-text', 'placeholder': _('as the network operator asks, e.g. the NMI') }),
						E('div', { 'class': 'cbi-value-description' }, [ _('An existing key is reused, so an installed certificate stays valid for it.') ])
					])
				]),
				E('button', { 'class': 'cbi-button cbi-button-action', 'click': ui.createHandlerFn(this, 'handleRequest') },
					[ info.key_exists ? _('Make a new request') : _('Make key and request') ]),
				E('div', { 'id': 'csipd-request-msg' }),
				csrBox,

				E('h3', {}, [ _('2. Signed certificate and CA bundle') ]),
				E('div', { 'class': 'cbi-value' }, [
					E('label', { 'class': 'cbi-value-title', 'for': 'csipd-cert-file' }, [ _('Signed certificate') ]),
					E('div', { 'class': 'cbi-value-field' }, [
						E('input', { 'id': 'csipd-cert-file', 'type': 'file', 'accept': '.pem,.crt,.cer' }),
						E('textarea', { 'id': 'csipd-cert-text', 'rows': 4, 'style': 'width:100%;font-family:monospace;font-size:12px', 'placeholder': _('…or paste it: this router\'s certificate first, then the manufacturer (MICA) certificate that signed it') }),
						E('div', { 'class': 'cbi-value-description' }, [ _('Will be saved at %s.').format(info.cert_path || '?') ])
					])
				]),
				E('div', { 'class': 'cbi-value' }, [
					E('label', { 'class': 'cbi-value-title', 'for': 'csipd-ca-file' }, [ _('Network operator CA bundle') ]),
					E('div', { 'class': 'cbi-value-field' }, [
						E('input', { 'id': 'csipd-ca-file', 'type': 'file', 'accept': '.pem,.crt,.cer' }),
						E('textarea', { 'id': 'csipd-ca-text', 'rows': 4, 'style': 'width:100%;font-family:monospace;font-size:12px', 'placeholder': _('…or paste it (PEM)') }),
						E('div', { 'class': 'cbi-value-description' }, [ _('Will be saved at %s. Leave empty to use the router\'s system trust store.').format(info.ca_path || '?') ])
					])
				]),
				E('button', { 'class': 'cbi-button cbi-button-apply', 'click': ui.createHandlerFn(this, 'handleInstall') }, [ _('Check and install') ]),
				E('div', { 'id': 'csipd-install-msg' })
			);
		}

		return E('div', { 'class': 'cbi-map' }, body);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
