/*
 * pg_warden.cpp — _PG_init, the hooks pg_warden installs, and the two
 * tables that tie the subsystems together: kSubsystems (shared memory and
 * the LWLocks each takes, listed in shmem.hpp) and kConfigLoaders (the
 * configuration tables the loader copies). Each hook chains the previous
 * one and enters pg_warden code through Guard(). Takes no lock itself
 * (AddinShmemInitLock at shared memory creation).
 */
#include "pg_warden/cron.hpp"

#include "pg_warden/admission.hpp"
#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/history.hpp"
#include "pg_warden/loader.hpp"
#include "pg_warden/policies.hpp"
#include "pg_warden/sampler.hpp"
#include "pg_warden/terminations.hpp"
#include "pg_warden/usage.hpp"

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

namespace warden {
namespace {

shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
ClientAuthentication_hook_type prev_client_auth_hook = nullptr;

/*
 * Every subsystem with shared state: its size, its initialisation, and the
 * LWLocks of the "pg_warden" tranche it takes (enum WardenLWLock in
 * shmem.hpp, in the same order). Add a line here and its locks there.
 */
struct SharedSubsystem {
  Size (*size)();
  void (*init)();
};
const SharedSubsystem kSubsystems[] = {
    {UsageShmemSize, UsageShmemInit},               /* keys_lock, sample_lock */
    {AdmissionShmemSize, AdmissionShmemInit},       /* admission_lock */
    {LoaderShmemSize, LoaderShmemInit},             /* config_lock */
    {IdlePoliciesShmemSize, IdlePoliciesShmemInit}, /* idle_policies_lock */
    {TerminationsShmemSize, TerminationsShmemInit}, /* terminations_lock */
    /* after usage: loading the history file maps keys to usage entries */
    {HistoryShmemSize, HistoryShmemInit}, /* history_lock */
};

void ShmemRequest() {
  if (prev_shmem_request_hook) prev_shmem_request_hook();
  Guard("shmem_request", [] {
    for (const SharedSubsystem &s : kSubsystems) RequestAddinShmemSpace(s.size());
    RequestNamedLWLockTranche("pg_warden", kLWLockCount);
  });
}

void ShmemStartup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  Guard("shmem_startup", [] {
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    for (const SharedSubsystem &s : kSubsystems) s.init();
    LWLockRelease(AddinShmemInitLock);
  });
}

/*
 * Login path. Runs after authentication succeeded, before the backend is
 * fully set up: the place to count a connection in, or to refuse it before
 * it costs a backend for long. Reads pg_warden's state from shared memory
 * only (the budgets table lives in another database).
 */
void ClientAuthentication(Port *port, int status) {
  if (prev_client_auth_hook) prev_client_auth_hook(port, status);
  Guard("client_authentication", [port, status] {
    if (status != STATUS_OK || am_walsender) return;
    AdmitLogin(port->database_name, port->user_name,
               port->application_name ? port->application_name : "");
  });
}

}  // namespace

/* Every configuration table and how to load it (see loader.hpp). Add one line per table. */
const ConfigLoader kConfigLoaders[] = {
    {"idle_policies", LoadIdlePolicies, ClearIdlePolicies},
    {"budgets", LoadBudgets, ClearBudgets},
};
const int kNumConfigLoaders = sizeof(kConfigLoaders) / sizeof(kConfigLoaders[0]);
static_assert(sizeof(kConfigLoaders) / sizeof(kConfigLoaders[0]) <= kMaxConfigLoaders,
              "raise kMaxConfigLoaders");

}  // namespace warden

void _PG_init(void) {
  warden::Guard("_PG_init", [] {
    /* Not preloaded: load quietly; warden.assert_preloaded() says what to do. */
    if (!process_shared_preload_libraries_in_progress) return;
    warden::DefineSettings();
    warden::prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = warden::ShmemRequest;
    warden::prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = warden::ShmemStartup;
    warden::prev_client_auth_hook = ClientAuthentication_hook;
    ClientAuthentication_hook = warden::ClientAuthentication;
    warden::RegisterSampler();
  });
}
