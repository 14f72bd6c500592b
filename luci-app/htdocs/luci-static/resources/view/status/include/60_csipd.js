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
		// No answer at all (a user without csipd's ACL): no box. The plugin's error
		// (csipd not running): said in one line.
		if (!s || (!s.summary && !s.error))
			return null;
		var text = s.summary || _('csipd is not answering: %s').format(s.error);
		return E('div', { 'class': 'csipd-overview' }, [
			E('p', { 'class': 'csipd-summary', 'style': 'font-weight:bold' }, [ text ]),
			E('a', { 'href': L.url('admin/services/csipd/status') }, [ _('Details…') ])
		]);
	}
});
