"""sagamesh broker adapter for Kafka (aiokafka): ``create_broker("kafka://host:9092")``."""

from sagamesh.brokers.kafka_wire import ID_HEADER

from ._broker import KafkaBroker
from ._options import KafkaOptions
from ._subscription import KafkaDelivery, KafkaSubscription

__all__ = ["ID_HEADER", "KafkaBroker", "KafkaDelivery", "KafkaOptions", "KafkaSubscription"]
