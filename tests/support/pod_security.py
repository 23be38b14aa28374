"""The Pod Security Standards' `restricted` profile (which includes `baseline`), as the PodSecurity admission
controller of Kubernetes 1.25+ applies it to a pod spec. The test apiserver (1.20) predates that controller, so the
rules are written out here from the published standard (kubernetes.io/docs/concepts/security/pod-security-standards)
and applied to every pod spec the operator and the chart produce."""

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
_SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def restricted_violations(pod):
    """Every rule of the restricted profile that `pod` (a PodSpec) breaks, as readable strings; [] when admitted."""
    out = []
    psc = pod.get("securityContext") or {}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or []),
                  *(pod.get("ephemeralContainers") or [])]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"{flag} is true")
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {vol['name']} uses {sorted(kinds - ALLOWED_VOLUMES)}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')} is not a safe sysctl")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod: hostProcess")
    if psc.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    out += _selinux("pod", psc.get("seLinuxOptions"))
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_OK:
        out.append(f"pod: seccompProfile {pod_seccomp}")
    for c in containers:
        name, sc = c.get("name"), c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{name}: hostProcess")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in _SECCOMP_OK:
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{name}: procMount {sc['procMount']}")
        out += _selinux(name, sc.get("seLinuxOptions"))
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort {port['hostPort']}")
    return out


def _selinux(where, options):
    options = options or {}
    out = []
    if options.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t",
                                   "container_engine_t"):
        out.append(f"{where}: seLinuxOptions.type {options['type']}")
    if options.get("user") or options.get("role"):
        out.append(f"{where}: seLinuxOptions.user/role set")
    return out
