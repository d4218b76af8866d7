# What the cluster module renders, checked field by field (no provider, no cluster). The
# schema check against the operators' CRDs is tests/unit/infra/test_terraform_cluster.py.
# Run: terraform test (or tofu test).

variables {
  job_image      = "registry.example.com/fedstream/job:1"
  checkpoint_dir = "s3://state/checkpoints"
  savepoint_dir  = "s3://state/savepoints"
  ha_dir         = "s3://state/ha"
}

run "defaults" {
  command = apply

  assert {
    condition     = [for m in output.manifests : m.kind] == ["Kafka", "KafkaNodePool", "KafkaTopic", "KafkaTopic", "KafkaTopic", "KafkaTopic", "KafkaTopic", "KafkaUser", "KafkaUser", "KafkaUser", "KafkaUser", "FlinkDeployment"]
    error_message = "one Kafka, one node pool, five topics, four users, one FlinkDeployment, in apply order"
  }
  assert {
    condition     = alltrue([for m in output.manifests : m.metadata.namespace == "fedstream"])
    error_message = "everything in the namespace"
  }
  assert {
    condition     = output.manifests[1].spec.replicas == 3 && output.manifests[1].spec.roles == ["controller", "broker"]
    error_message = "three KRaft nodes, each controller and broker"
  }
  assert {
    condition     = output.manifests[1].metadata.labels["strimzi.io/cluster"] == "fedstream"
    error_message = "the node pool belongs to the Kafka cluster"
  }
  assert {
    condition     = output.manifests[0].spec.kafka.listeners[0].authentication.type == "scram-sha-512" && output.manifests[0].spec.kafka.listeners[0].tls
    error_message = "the only listener is TLS with SCRAM-SHA-512"
  }
  assert {
    condition     = output.manifests[0].spec.kafka.authorization.type == "simple" && output.manifests[0].spec.kafka.config["allow.everyone.if.no.acl.found"] == false
    error_message = "ACLs enforced, nothing allowed without one"
  }
  assert {
    condition     = [for m in slice(output.manifests, 2, 7) : m.spec.topicName] == ["fl.updates", "fl.control", "fl.models", "fl.dlq", "fl.devices"]
    error_message = "the five topics"
  }
  assert {
    condition     = [for m in slice(output.manifests, 2, 7) : m.spec.partitions] == [6, 1, 1, 1, 1]
    error_message = "updates partitioned, the rest one partition"
  }
  assert {
    condition     = alltrue([for m in slice(output.manifests, 2, 7) : m.spec.replicas == 3 && m.spec.config["min.insync.replicas"] == 2])
    error_message = "replicated three times, two in sync"
  }
  assert {
    condition     = output.manifests[3].spec.config["retention.ms"] == -1 && output.manifests[4].spec.config["retention.ms"] == -1
    error_message = "control and models are kept forever"
  }
  assert {
    condition     = output.manifests[5].spec.config["max.message.bytes"] == 16777216 + 1048576
    error_message = "the DLQ takes a maximal update plus 1 MiB"
  }
  assert {
    condition     = output.manifests[6].spec.config["cleanup.policy"] == "compact" && output.manifests[6].spec.config["retention.ms"] == -1
    error_message = "the device registry is compacted and kept forever"
  }
  assert {
    condition     = [for m in slice(output.manifests, 7, 11) : m.metadata.name] == ["job", "device", "owner", "auditor"]
    error_message = "one KafkaUser per role"
  }
  assert {
    condition     = alltrue([for m in slice(output.manifests, 7, 11) : m.spec.authentication.type == "scram-sha-512" && m.spec.authorization.type == "simple"])
    error_message = "SCRAM-SHA-512 users with simple authorization"
  }
  assert {
    # the same grants as modules/kafka: count the (resource, operation) pairs per user
    condition     = sum([for m in slice(output.manifests, 7, 11) : sum([for acl in m.spec.authorization.acls : length(acl.operations)])]) == length(output.acls)
    error_message = "the KafkaUsers grant exactly the ACL matrix (36 operations)"
  }
  assert {
    condition     = length(output.acls) == 36
    error_message = "36 ACL entries"
  }
  assert {
    condition = output.manifests[7].spec.authorization.acls[6] == {
      type       = "allow"
      host       = "*"
      resource   = { type = "transactionalId", name = "fedstream-aggregator", patternType = "prefix" }
      operations = ["Write", "Describe"]
    }
    error_message = "the job owns its transactional-id prefix"
  }
  assert {
    condition = output.manifests[8].spec.authorization.acls == [
      { type = "allow", host = "*", resource = { type = "topic", name = "fl.updates", patternType = "literal" }, operations = ["Write", "Describe", "DescribeConfigs"] },
      { type = "allow", host = "*", resource = { type = "topic", name = "fl.models", patternType = "literal" }, operations = ["Read", "Describe"] },
      { type = "allow", host = "*", resource = { type = "group", name = "fedstream-device", patternType = "prefix" }, operations = ["Read"] },
    ]
    error_message = "the device writes updates and reads models, nothing else (not the device registry)"
  }
  assert {
    condition     = alltrue(flatten([for acl in output.manifests[10].spec.authorization.acls : [for op in acl.operations : contains(["Read", "Describe"], op)]]))
    error_message = "the auditor only reads"
  }
}

run "flink_deployment" {
  command = apply

  variables {
    parallelism  = 4
    upgrade_mode = "last-state"
  }

  assert {
    condition     = output.manifests[11].spec.job.upgradeMode == "last-state" && output.manifests[11].spec.job.parallelism == 4
    error_message = "upgrade mode and parallelism reach the job"
  }
  assert {
    condition     = output.manifests[11].spec.job.entryClass == "org.apache.flink.client.python.PythonDriver" && output.manifests[11].spec.job.jarURI == "local:///opt/flink/opt/flink-python-2.2.1.jar"
    error_message = "the PyFlink driver runs the job"
  }
  assert {
    condition     = slice(output.job_args, 0, 6) == ["-py", "/opt/fedstream/jobs/fedstream/jobs/aggregation_job.py", "-pyfs", "/opt/fedstream/schemas,/opt/fedstream/pipelines,/opt/fedstream/jobs", "--config", "/opt/fedstream/jobs/config/local.toml"]
    error_message = "python entry, -pyfs with the three source folders, the config file"
  }
  assert {
    condition     = contains(output.job_args, "kafka.bootstrap=fedstream-kafka-bootstrap.fedstream.svc:9093") && contains(output.job_args, "checkpoint.dir=s3://state/checkpoints") && contains(output.job_args, "runtime.parallelism=4")
    error_message = "the job is pointed at the cluster's TLS listener and durable checkpoints"
  }
  assert {
    condition     = contains(output.job_args, "kafka.transactional_id_prefix=fedstream-aggregator") && contains(output.job_args, "kafka.group_id=fedstream-aggregator")
    error_message = "the job uses the group and transactional ids its ACLs grant"
  }
  assert {
    condition     = output.manifests[11].spec.flinkConfiguration["execution.checkpointing.savepoint-dir"] == "s3://state/savepoints" && output.manifests[11].spec.flinkConfiguration["high-availability.type"] == "kubernetes"
    error_message = "savepoints and HA for upgrades"
  }
  assert {
    condition     = output.manifests[11].spec.flinkConfiguration["restart-strategy.type"] == "fixed-delay" && output.manifests[11].spec.flinkConfiguration["restart-strategy.fixed-delay.attempts"] == "10"
    error_message = "bounded restarts"
  }
  assert {
    condition     = output.manifests[11].spec.taskManager.resource == { cpu = 2, memory = "4096m" } && output.manifests[11].spec.jobManager.resource == { cpu = 1, memory = "2048m" }
    error_message = "resources"
  }
  assert {
    condition     = contains(output.job_args, "kafka.username=job") && contains(output.job_args, "kafka.password_file=/etc/fedstream/kafka-user/password") && contains(output.job_args, "kafka.ca_file=/etc/fedstream/kafka-ca/ca.crt")
    error_message = "the job authenticates as the job principal, with the mounted password and CA"
  }
  assert {
    condition     = output.manifests[11].spec.podTemplate.spec.volumes[1].secret.secretName == "job" && output.manifests[11].spec.podTemplate.spec.volumes[0].secret.secretName == "fedstream-cluster-ca-cert"
    error_message = "password and CA come from Strimzi's Secrets"
  }
  assert {
    condition     = [for m in output.manifests[11].spec.podTemplate.spec.containers[0].volumeMounts : m.mountPath] == ["/etc/fedstream/kafka-ca", "/etc/fedstream/kafka-user"]
    error_message = "the Secrets are mounted where the job's arguments point"
  }
}

run "one_node" {
  command = apply

  variables {
    kafka_replicas      = 1
    replication_factor  = 1
    min_insync_replicas = 1
    kafka_storage_class = "fast-ssd"
  }

  assert {
    condition     = output.manifests[1].spec.replicas == 1 && output.manifests[1].spec.storage.volumes[0].class == "fast-ssd"
    error_message = "node count and storage class follow the variables"
  }
}

run "replication_above_nodes_refused" {
  command = plan
  variables {
    kafka_replicas = 1
  }
  expect_failures = [var.replication_factor]
}

run "stateless_upgrade_refused" {
  command = plan
  variables {
    upgrade_mode = "stateless"
  }
  expect_failures = [var.upgrade_mode]
}

run "local_checkpoints_refused" {
  command = plan
  variables {
    checkpoint_dir = "file:///tmp/checkpoints"
  }
  expect_failures = [var.checkpoint_dir]
}

run "zero_partitions_refused" {
  command = plan
  variables {
    updates_partitions = 0
  }
  expect_failures = [var.updates_partitions]
}

run "uppercase_topic_refused" {
  command = plan
  variables {
    topics = { updates = "FL_updates", control = "fl.control", models = "fl.models", dlq = "fl.dlq" }
  }
  expect_failures = [var.topics]
}
