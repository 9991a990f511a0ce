"""Pure imaging: numpy in, numpy out (value domains; baseline, SRCNN, metrics to come).

Never imports the network side of pydicom, SQLAlchemy or the spool; TensorFlow only lazily.
"""
