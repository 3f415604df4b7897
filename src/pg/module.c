/* Module entry: registers the GUCs. */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "kms.h"
#include "protect_trigger.h"
#include "server_keyring.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	cc_define_key_gucs();
	cc_define_trigger_gucs();
	cc_define_kms_gucs();
	MarkGUCPrefixReserved("conn_crypto");
}
