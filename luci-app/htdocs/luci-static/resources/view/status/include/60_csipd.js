'use strict';
'require baseclass';
'require rpc';

// LuCI Status → Overview: csipd's one-line summary (the same words as csipd status, the
// built-in page and the csipd status view), with a link to the full status.
var callStatus = rpc.declare({
	object: 'csipd',
	method: 'status',
	expect: { '': {} }
});

return baseclass.extend({
	title: _('Dynamic connection (csipd)'),

	load: function() {
		return L.resolveDefault(callStatus(), {});
	},

	render: function(s) {
		// Users without csipd's ACL, or csipd not running: say so in one line.
		var text = (s && s.summary) ? s.summary
			: _('csipd is not answering%s').format(s && s.error ? ': ' + s.error : '');
		return E('div', { 'class': 'csipd-overview' }, [
			E('p', { 'class': 'csipd-summary', 'style': 'font-weight:bold' }, [ text ]),
			E('a', { 'href': L.url('admin/services/csipd/status') }, [ _('Details…') ])
		]);
	}
});
