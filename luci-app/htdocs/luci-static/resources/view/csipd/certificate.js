'use strict';
'require view';
'require rpc';
'require ui';

// `ubus call csipd cert_info`: the configured client certificate (LFDI, SFDI, subject,
// expiry) or {"error": "..."}.
var callCertInfo = rpc.declare({
	object: 'csipd',
	method: 'cert_info',
	expect: { '': {} }
});

// `ubus call csipd cert_request '{"cn":"..."}'`: a new key and a CSR to send to the
// utility's certificate authority, or {"error": "..."}.
var callCertRequest = rpc.declare({
	object: 'csipd',
	method: 'cert_request',
	params: [ 'cn' ],
	expect: { '': {} }
});

// `ubus call csipd status`: the running daemon's identity, shown when cert_info fails.
var callStatus = rpc.declare({
	object: 'csipd',
	method: 'status',
	expect: { '': {} }
});

function row(label, value) {
	return E('tr', { 'class': 'tr' }, [
		E('td', { 'class': 'td left', 'style': 'width:33%' }, [ E('strong', {}, [ label ]) ]),
		E('td', { 'class': 'td left' }, [ value ])
	]);
}

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(callCertInfo(), { error: _('cert_info did not answer') }),
			L.resolveDefault(callStatus(), { error: _('status did not answer') })
		]);
	},

	handleRequest: function(ev) {
		var cn = document.getElementById('csipd-cn').value.trim();
		var out = document.getElementById('csipd-csr');
		if (!cn) {
			ui.addNotification(null, E('p', {}, [ _('Enter a common name for the certificate request.') ]));
			return;
		}
		return callCertRequest(cn).then(function(res) {
			if (res.error) {
				out.replaceChildren(E('div', { 'class': 'alert-message warning' }, [ res.error ]));
				return;
			}
			var children = [
				E('p', {}, [ _('Send this certificate signing request to the network operator. The private key stays on this router.') ]),
				E('textarea', { 'readonly': 'readonly', 'rows': 14, 'style': 'width:100%; font-family:monospace' }, [ res.csr || '' ])
			];
			if (res.key_path)
				children.push(E('p', {}, [ _('Private key: ') + res.key_path ]));
			if (res.lfdi)
				children.push(E('p', {}, [ 'LFDI: ', E('code', {}, [ res.lfdi ]), ' SFDI: ', E('code', {}, [ String(res.sfdi) ]) ]));
			out.replaceChildren.apply(out, children);
		}, function(err) {
			out.replaceChildren(E('div', { 'class': 'alert-message warning' }, [ _('cert_request failed: ') + err ]));
		});
	},

	render: function(data) {
		var info = data[0] || {}, status = data[1] || {};
		var identity = E('table', { 'class': 'table' });

		if (!info.error) {
			identity.appendChild(row(_('LFDI'), E('code', {}, [ info.lfdi || '–' ])));
			identity.appendChild(row(_('SFDI'), E('code', {}, [ info.sfdi == null ? '–' : String(info.sfdi) ])));
			if (info.subject)
				identity.appendChild(row(_('Subject'), info.subject));
			if (info.issuer)
				identity.appendChild(row(_('Issuer'), info.issuer));
			if (info.not_after)
				identity.appendChild(row(_('Valid until'), info.not_after));
		}
		else if (status.utility && status.utility.lfdi) {
			// The running daemon knows its identity even when cert_info cannot answer.
			identity.appendChild(row(_('LFDI'), E('code', {}, [ status.utility.lfdi ])));
			identity.appendChild(row(_('SFDI'), E('code', {}, [ status.utility.sfdi == null ? '–' : String(status.utility.sfdi) ])));
		}

		return E('div', { 'class': 'cbi-map' }, [
			E('h2', {}, [ _('Certificate') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('The network operator identifies this router by the LFDI and SFDI of its client certificate. Give them these numbers when you register the site.')
			]),
			info.error ? E('div', { 'class': 'alert-message warning' }, [ info.error ]) : '',
			identity,
			E('h3', {}, [ _('New key and certificate request') ]),
			E('div', { 'class': 'cbi-value' }, [
				E('label', { 'class': 'cbi-value-title', 'for': 'csipd-cn' }, [ _('Common name') ]),
				E('div', { 'class': 'cbi-value-field' }, [
					E('input', { 'id': 'csipd-cn', 'type': 'text', 'class': 'cbi-input-text', 'placeholder': 'csipd-site-0001' })
				])
			]),
			E('button', {
				'class': 'cbi-button cbi-button-action',
				'click': ui.createHandlerFn(this, 'handleRequest')
			}, [ _('Generate key and CSR') ]),
			E('div', { 'id': 'csipd-csr', 'style': 'margin-top:1em' })
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
